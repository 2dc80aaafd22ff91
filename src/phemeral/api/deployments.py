"""Deployments: upload-and-build, show, list (cursor pages), promote."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict

from phemeral import deploys
from phemeral.api.deps import CP, Actor
from phemeral.deploys import ControlPlane, Trigger
from phemeral.errors import NotFound, SourceError
from phemeral.models import TriggerKind
from phemeral.store.views import (
    deployment_view,
    get_deployment,
    get_environment,
    get_project,
    iso,
    list_deployments,
)

router = APIRouter(tags=["deployments"])
Json = dict[str, Any]
CHUNK = 1 << 20


class DeploymentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pinned: bool


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = None


@router.post("/projects/{name}/deployments", status_code=201)
async def create_deployment(
    name: str,
    cp: CP,
    actor: Actor,
    archive: Annotated[UploadFile, File(description="the project as a .tar.gz")],
    environment: Annotated[str, Form()] = "production",
    promote: Annotated[bool, Form()] = True,
    create_project: Annotated[bool, Form()] = False,
) -> Json:
    """Upload a tar.gz of the project; the build runs in the background (follow its log)."""
    path = await asyncio.to_thread(_save_upload, cp, archive)
    try:
        if create_project:
            await asyncio.to_thread(_ensure_project, cp, name)
        trigger = Trigger(kind=TriggerKind.MANUAL, actor=actor)
        deployment, _ = await asyncio.to_thread(
            deploys.deploy, cp, name, environment, trigger, archive=path, promote=promote
        )
    finally:
        path.unlink(missing_ok=True)  # moved into place on success
    return await asyncio.to_thread(show, cp, deployment.id)


def _save_upload(cp: ControlPlane, upload: UploadFile) -> Path:
    limit = cp.settings.max_upload_mb * 1024 * 1024
    cp.uploads_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=cp.uploads_dir, prefix="upload-", suffix=".tar.gz")
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := upload.file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                out.close()
                Path(name).unlink(missing_ok=True)
                raise SourceError(
                    f"the archive is larger than the server's limit of {cp.settings.max_upload_mb}"
                    " MB (--max-upload-mb)"
                )
            out.write(chunk)
    if size == 0:
        Path(name).unlink(missing_ok=True)
        raise SourceError("the archive is empty")
    return Path(name)


def _ensure_project(cp: ControlPlane, name: str) -> None:
    with cp.store.read() as s:
        try:
            get_project(s, name)
            return
        except NotFound:
            pass
    deploys.create_project(cp, name)


def show(cp: ControlPlane, deployment_id: str) -> Json:
    with cp.store.read() as s:
        d = get_deployment(s, deployment_id)
        return deployment_view(s, d, cp.settings, deploys.instances(cp, d.id))


@router.get("/deployments/{deployment_id}")
def show_deployment(deployment_id: str, cp: CP, actor: Actor) -> Json:
    return show(cp, deployment_id)


@router.patch("/deployments/{deployment_id}")
def patch_deployment(deployment_id: str, body: DeploymentPatch, cp: CP, actor: Actor) -> Json:
    """Pin a deployment (release retention keeps it whatever its age) or unpin it."""
    deploys.set_pinned(cp, deployment_id, body.pinned)
    return show(cp, deployment_id)


@router.get("/projects/{name}/deployments")
def list_project_deployments(
    name: str,
    cp: CP,
    actor: Actor,
    environment: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Json:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    with cp.store.read() as s:
        project = get_project(s, name)
        env = get_environment(s, project, environment) if environment else None
        return list_deployments(
            s,
            project,
            cp.settings,
            environment=env,
            cursor=cursor,
            limit=limit,
            instances=lambda i: deploys.instances(cp, i),
        )


@router.post("/deployments/{deployment_id}/promote")
def promote_deployment(deployment_id: str, body: PromoteBody, cp: CP, actor: Actor) -> Json:
    """Make a successful deployment current on its environment (also how rollback works)."""
    promotion = deploys.promote(cp, deployment_id, actor, body.reason)
    view = show(cp, deployment_id)
    view["promotion"] = {
        "from": promotion.from_deployment_id,
        "to": promotion.to_deployment_id,
        "actor": promotion.actor,
        "reason": promotion.reason,
        "at": iso(promotion.created_at),
    }
    return view
