"""Pull-request previews: list them, approve a fork's, and the project's preview variable set."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from phemeral import deploys
from phemeral.api.deps import CP, Actor
from phemeral.api.projects import Strict, VariablesSet, VariablesUnset
from phemeral.deploys.previews import (
    approve_preview,
    list_previews,
    provision_preview_services,
    set_preview_variables,
    unset_preview_variables,
)
from phemeral.errors import Conflict
from phemeral.github.pulls import preview_environment
from phemeral.models import TriggerKind
from phemeral.store.schema import PreviewVar
from phemeral.store.views import get_project

router = APIRouter(tags=["previews"])
Json = dict[str, Any]


class Approval(Strict):
    redeploy: bool = True  # build the head again, now with the preview variables


@router.get("/projects/{name}/previews")
def previews(name: str, cp: CP, actor: Actor) -> Json:
    """The project's pull-request previews (open, suspended and closed), by number."""
    return {"items": list_previews(cp, name)}


@router.post("/projects/{name}/previews/{number}/approve")
async def approve(name: str, number: int, body: Approval, cp: CP, actor: Actor) -> Json:
    """Let a fork's preview receive the preview variables; by default its head is built again."""
    preview = await asyncio.to_thread(approve_preview, cp, name, number, actor)
    environment = preview_environment(number)
    provisioned = await asyncio.to_thread(provision_preview_services, cp, name, environment)
    out: Json = {
        "number": number,
        "approved_by": actor,
        "deployment": None,
        "services": provisioned,
    }
    if body.redeploy:
        if preview.head_sha is None or preview.state != "open":
            raise Conflict(f"preview #{number} is {preview.state}: nothing to redeploy")
        trigger = deploys.Trigger(
            kind=TriggerKind.PUSH,
            actor=f"pull request #{number} approved by {actor}",
            commit=preview.head_sha,
            pusher=actor,
        )
        deployment, _ = await asyncio.to_thread(deploys.deploy, cp, name, environment, trigger)
        out["deployment"] = deployment.id
    return out


@router.get("/projects/{name}/preview-variables")
def preview_variables(name: str, cp: CP, actor: Actor) -> Json:
    """The project's preview variable set (secret values masked)."""
    with cp.store.read() as s:
        project = get_project(s, name)
        rows = s.scalars(
            select(PreviewVar).where(PreviewVar.project_id == project.id).order_by(PreviewVar.key)
        )
        return {
            "items": [
                {
                    "key": r.key,
                    "value": "********" if r.secret else cp.box.decrypt(r.value),
                    "secret": r.secret,
                }
                for r in rows
            ]
        }


@router.post("/projects/{name}/preview-variables")
def set_variables(name: str, body: VariablesSet, cp: CP, actor: Actor) -> Json:
    """Add or replace preview variables (they reach preview deployments created from now on)."""
    keys = set_preview_variables(cp, name, body.values, secret=body.secret)
    return {"set": keys, "note": "applies to preview deployments created from now on"}


@router.post("/projects/{name}/preview-variables/unset")
def unset_variables(name: str, body: VariablesUnset, cp: CP, actor: Actor) -> Json:
    return {"unset": unset_preview_variables(cp, name, body.keys)}
