"""Backing services: PostgreSQL databases and Redis servers of an environment."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from phemeral.api.deps import CP, Actor
from phemeral.deploys import ControlPlane
from phemeral.deploys import services as svc
from phemeral.errors import InvalidInput

router = APIRouter(tags=["services"])
Json = dict[str, Any]
MAX_RESTORE_BYTES = 8 << 30


class ServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["postgres", "redis"]
    project: str
    environment: str = "production"
    name: str | None = Field(
        default=None, description="Platform-wide unique; default {project}-{environment}-{kind}."
    )
    connection_limit: int | None = Field(default=None, description="PostgreSQL only.")
    maxmemory_mb: int | None = Field(default=None, description="Redis only.")


class ServicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_limit: int | None = Field(default=None, description="PostgreSQL only.")
    maxmemory_mb: int | None = Field(default=None, description="Redis only.")


def _view(cp: ControlPlane, name: str, *, reveal: bool = False) -> Json:
    with cp.store.read() as s:
        return svc.service_view(cp, s, svc.get_service(s, name), reveal=reveal)


@router.post("/services", status_code=201)
async def create_service(body: ServiceCreate, cp: CP, actor: Actor) -> Json:
    """Provision a service for an environment. Its variables (PostgreSQL: DATABASE_URL, PGHOST,
    PGPORT, PGUSER, PGPASSWORD, PGDATABASE; Redis: REDIS_URL) reach deployments created from
    now on; a user variable of the same name wins."""
    row = await asyncio.to_thread(
        svc.create_service,
        cp,
        body.project,
        body.environment,
        body.kind,
        name=body.name,
        connection_limit=body.connection_limit,
        maxmemory_mb=body.maxmemory_mb,
    )
    return _view(cp, row.name)


@router.get("/projects/{name}/services")
def list_services(name: str, cp: CP, actor: Actor, environment: str | None = None) -> Json:
    with cp.store.read() as s:
        return {"items": svc.project_services(cp, s, name, environment)}


@router.get("/services/{name}")
def show_service(name: str, cp: CP, actor: Actor, reveal: bool = False) -> Json:
    """A service; ``reveal=true`` adds its current ``credentials`` (the variables it provides)."""
    return _view(cp, name, reveal=reveal)


@router.patch("/services/{name}")
async def patch_service(name: str, body: ServicePatch, cp: CP, actor: Actor) -> Json:
    await asyncio.to_thread(
        svc.update_service,
        cp,
        name,
        connection_limit=body.connection_limit,
        maxmemory_mb=body.maxmemory_mb,
    )
    return _view(cp, name)


@router.post("/services/{name}/credentials/rotate")
async def rotate_credentials(
    name: str, cp: CP, actor: Actor, revoke_previous: bool = False
) -> Json:
    """New credentials (PostgreSQL: a new login role and password; Redis: a new password),
    valid at once. Deployments created from now on receive them. The credentials they replace
    stay valid until the next rotation, so running deployments keep working; with
    ``revoke_previous=true`` they stop at once (and their connections are closed): use that
    when they leaked, then redeploy."""
    await asyncio.to_thread(svc.rotate_credentials, cp, name, revoke_previous=revoke_previous)
    view = _view(cp, name)
    view["note"] = "applies to deployments created from now on; " + (
        "the previous credentials no longer work: redeploy now"
        if revoke_previous
        else "the previous credentials keep working until the next rotation"
    )
    return view


@router.delete("/services/{name}")
async def delete_service(name: str, cp: CP, actor: Actor) -> Json:
    """Delete a service; a final backup (pg_dump custom format, or RDB) stays in the data dir."""
    path = await asyncio.to_thread(svc.delete_service, cp, name)
    return {"deleted": name, "final_backup": str(path) if path else None}


@router.post("/services/{name}/backups", status_code=201)
async def backup_service(name: str, cp: CP, actor: Actor) -> Json:
    """A backup now: pg_dump (custom format) or an RDB snapshot, in the data dir."""
    path = await asyncio.to_thread(svc.backup_service, cp, name)
    return {"service": name, "path": str(path), "bytes": path.stat().st_size}


@router.post("/services/{name}/restore")
async def restore_service(
    name: str, cp: CP, actor: Actor, file: Annotated[UploadFile, File()]
) -> Json:
    """Replace the service's data with an uploaded backup (a pg_dump custom-format file for
    PostgreSQL, an RDB file for Redis), e.g. the final backup a deletion left."""
    fd, tmp = tempfile.mkstemp(prefix="restore-", dir=cp.settings.data_dir)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            size = 0
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > MAX_RESTORE_BYTES:
                    raise InvalidInput("the backup file is larger than 8 GiB")
                out.write(chunk)
        await asyncio.to_thread(svc.restore_service, cp, name, path)
    finally:
        path.unlink(missing_ok=True)
    return {"restored": name, "bytes": size}
