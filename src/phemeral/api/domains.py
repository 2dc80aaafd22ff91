"""Custom domains: attach a full host name to an environment, see its certificate, detach it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from phemeral import deploys
from phemeral.api.deps import CP, Actor

router = APIRouter(tags=["domains"])
Json = dict[str, Any]


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    project: str
    environment: str = "production"


@router.post("/domains", status_code=201)
def add_domain(body: DomainCreate, cp: CP, actor: Actor) -> Json:
    """Attach; the answer names the DNS record to create and the certificate's state."""
    return deploys.add_domain(cp, body.name, body.project, body.environment)


@router.get("/domains")
def list_domains(cp: CP, actor: Actor, project: str | None = None) -> Json:
    return {"items": deploys.list_domains(cp, project)}


@router.get("/domains/{name}")
def show_domain(name: str, cp: CP, actor: Actor) -> Json:
    return deploys.get_domain(cp, name)


@router.post("/domains/{name}/renew")
def renew_domain(name: str, cp: CP, actor: Actor) -> Json:
    """Order a new certificate now; the current one keeps serving until it is replaced."""
    return deploys.renew_domain(cp, name)


@router.delete("/domains/{name}", status_code=204)
def remove_domain(name: str, cp: CP, actor: Actor) -> Response:
    deploys.remove_domain(cp, name)
    return Response(status_code=204)
