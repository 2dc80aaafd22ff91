"""Backing services of an environment: create, list, rotate, back up, restore, copy, delete;
the variables they give deployments; their start and stop with the platform.

A row is written before the server work starts (so a name clash fails at once, and two
platforms never provision the same name) and removed again if that work fails. The work itself
runs outside any transaction: a slow pg_dump never holds the store's write lock.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane, find_environment, now
from phemeral.deploys.preview_set import preview_variables, unapproved_fork
from phemeral.errors import Conflict, InvalidInput, NotFound
from phemeral.models import Endpoint
from phemeral.services.manager import ServiceRecord
from phemeral.services.spec import (
    ServiceKind,
    Sourced,
    check_connection_limit,
    check_kind,
    check_service_name,
    database_identifier,
    default_service_name,
    merge_variables,
    new_password,
    new_salt,
    service_variables,
)
from phemeral.store.schema import Deployment, Environment, EnvVar, Preview, Project, Service
from phemeral.store.views import get_project, iso

log = logging.getLogger("phemeral.deploys")
Json = dict[str, Any]
MAX_MAXMEMORY_MB = 65536
SECRET_SERVICE_VARIABLES = frozenset({"DATABASE_URL", "PGPASSWORD", "REDIS_URL"})


def record_of(cp: ControlPlane, row: Service) -> ServiceRecord:
    secrets: dict[str, Any] = json.loads(cp.box.decrypt(row.credentials))
    return ServiceRecord(
        name=row.name,
        kind=ServiceKind(row.kind),
        location=row.location,
        resource=row.resource,
        port=row.port,
        password=secrets["password"],
        admin_password=secrets.get("admin_password", ""),
        connection_limit=row.connection_limit,
        maxmemory_mb=row.maxmemory_mb,
        user=secrets.get("user", ""),
        generation=secrets.get("generation", 0),
        previous=tuple((p["user"], p["password"]) for p in secrets.get("previous", [])),
    )


def _credentials(cp: ControlPlane, record: ServiceRecord) -> str:
    data: dict[str, Any] = {"password": record.password}
    if record.admin_password:
        data["admin_password"] = record.admin_password
    if record.generation:
        data |= {
            "user": record.user,
            "generation": record.generation,
            "previous": [{"user": u, "password": p} for u, p in record.previous],
        }
    return cp.box.encrypt(json.dumps(data))


def get_service(s: Session, name: str) -> Service:
    row = s.scalar(select(Service).where(Service.name == name))
    if row is None:
        raise NotFound(f"no service named {name!r}")
    return row


def environment_services(s: Session, environment_id: int) -> list[Service]:
    query = select(Service).where(Service.environment_id == environment_id).order_by(Service.name)
    return list(s.scalars(query))


def _check_maxmemory(mb: int | None) -> int | None:
    if mb is not None and not 1 <= mb <= MAX_MAXMEMORY_MB:
        raise InvalidInput(f"maxmemory must be between 1 and {MAX_MAXMEMORY_MB} MB")
    return mb


def create_service(
    cp: ControlPlane,
    project: str,
    environment: str,
    kind: str,
    *,
    name: str | None = None,
    connection_limit: int | None = None,
    maxmemory_mb: int | None = None,
) -> Service:
    """Provision a service for the environment; its variables reach deployments created later."""
    service_kind = check_kind(kind)
    check_connection_limit(connection_limit)
    _check_maxmemory(maxmemory_mb)
    if service_kind == ServiceKind.REDIS and connection_limit is not None:
        raise InvalidInput("a connection limit applies to PostgreSQL services only")
    if service_kind == ServiceKind.POSTGRES and maxmemory_mb is not None:
        raise InvalidInput("maxmemory applies to Redis services only")
    name = check_service_name(name or default_service_name(project, environment, service_kind))
    salt = new_salt()
    resource = (
        database_identifier(name, salt)
        if service_kind == ServiceKind.POSTGRES
        else f"{name}-{salt}"
    )
    record = ServiceRecord(
        name=name,
        kind=service_kind,
        location=cp.services.postgres_location
        if service_kind == ServiceKind.POSTGRES
        else "embedded",
        resource=resource,
        port=0,
        password=new_password(),
        admin_password=new_password() if service_kind == ServiceKind.REDIS else "",
        connection_limit=connection_limit,
        maxmemory_mb=maxmemory_mb,
    )
    try:
        with cp.store.write() as s:
            env = find_environment(s, project, environment, lock=True)
            if s.scalar(select(Service.id).where(Service.name == name)) is not None:
                raise Conflict(f"a service named {name!r} already exists; choose another --name")
            same = [r for r in environment_services(s, env.id) if r.kind == service_kind]
            if same:
                raise Conflict(
                    f"environment {project}/{environment} already has a {service_kind} service "
                    f"({same[0].name}); one of each kind per environment"
                )
            row = Service(
                name=name,
                kind=service_kind.value,
                environment_id=env.id,
                location=record.location,
                resource=resource,
                port=0,
                credentials=_credentials(cp, record),
                connection_limit=connection_limit,
                maxmemory_mb=maxmemory_mb,
                created_at=now(),
            )
            s.add(row)
    except IntegrityError as exc:
        raise Conflict(f"a service named {name!r} already exists; choose another --name") from exc
    try:
        port = cp.services.provision(record)
    except BaseException:
        with cp.store.write() as s:
            s.execute(delete(Service).where(Service.name == name))
        raise
    with cp.store.write() as s:
        row = get_service(s, name)
        row.port = port
    return row


def rotate_credentials(cp: ControlPlane, name: str, *, revoke_previous: bool = False) -> Service:
    """New credentials, valid at once; deployments created from now on receive them. The
    current ones stay valid until the next rotation (running deployments keep working), unless
    ``revoke_previous``: then they stop at once, and so do their open connections."""
    with cp.store.read() as s:
        record = record_of(cp, get_service(s, name))
    new = cp.services.rotate(record, new_password(), keep_previous=not revoke_previous)
    with cp.store.write() as s:
        row = get_service(s, name)
        row.credentials = _credentials(cp, new)
        row.rotated_at = now()
    return row


def update_service(
    cp: ControlPlane,
    name: str,
    *,
    connection_limit: int | None = None,
    maxmemory_mb: int | None = None,
) -> Service:
    check_connection_limit(connection_limit)
    _check_maxmemory(maxmemory_mb)
    with cp.store.read() as s:
        row = get_service(s, name)
        kind = ServiceKind(row.kind)
    if kind == ServiceKind.REDIS and connection_limit is not None:
        raise InvalidInput("a connection limit applies to PostgreSQL services only")
    if kind == ServiceKind.POSTGRES and maxmemory_mb is not None:
        raise InvalidInput("maxmemory applies to Redis services only")
    with cp.store.write() as s:
        row = get_service(s, name)
        if connection_limit is not None:
            row.connection_limit = connection_limit
        if maxmemory_mb is not None:
            row.maxmemory_mb = maxmemory_mb
        record = record_of(cp, row)
    cp.services.set_limits(record)
    return row


def backup_service(cp: ControlPlane, name: str) -> Path:
    with cp.store.read() as s:
        record = record_of(cp, get_service(s, name))
    return cp.services.backup(record, when=now())


def restore_service(cp: ControlPlane, name: str, source: Path) -> None:
    with cp.store.read() as s:
        record = record_of(cp, get_service(s, name))
    cp.services.restore(record, source)


def delete_service(cp: ControlPlane, name: str) -> Path | None:
    """Final backup, server work, then the row; returns where the final backup is."""
    with cp.store.read() as s:
        record = record_of(cp, get_service(s, name))
    path = cp.services.remove(record, when=now())
    with cp.store.write() as s:
        s.execute(delete(Service).where(Service.name == name))
    return path


@dataclass(frozen=True)
class Removed:
    name: str
    backup: str | None


def delete_environment_services(cp: ControlPlane, environment_ids: list[int]) -> list[Removed]:
    with cp.store.read() as s:
        names = [r.name for e in environment_ids for r in environment_services(s, e)]
    removed = []
    for name in names:
        path = delete_service(cp, name)
        removed.append(Removed(name, str(path) if path else None))
    return removed


def copy_services(
    cp: ControlPlane, project: str, source: str, dest: str, *, with_data: bool
) -> list[Json]:
    """Give ``dest`` a service of each kind ``source`` has, empty or with a copy of the data."""
    with cp.store.read() as s:
        rows = environment_services(s, find_environment(s, project, source).id)
        originals = [(r.kind, record_of(cp, r)) for r in rows]
    copied = []
    for kind, original in originals:
        row = create_service(cp, project, dest, kind)
        if with_data:
            with cp.store.read() as s:
                fresh = record_of(cp, get_service(s, row.name))
            cp.services.copy(original, fresh, when=now())
        copied.append(
            {
                "name": row.name,
                "kind": kind,
                "from": original.name,
                "contents": "schema and data" if with_data else "empty",
            }
        )
    return copied


# ── what deployments receive ───────────────────────────────────────────────────────────────


def service_values(cp: ControlPlane, s: Session, env: Environment) -> dict[str, dict[str, str]]:
    """Each service of the environment → the variables it provides."""
    return {
        row.name: service_variables(cp.services.endpoint(record_of(cp, row)))
        for row in environment_services(s, env.id)
        if row.port
    }


def merged_variables(cp: ControlPlane, s: Session, env: Environment) -> list[Sourced]:
    """User variables (a preview's: the project's preview set, then its own) and services'.

    A fork's preview that nobody approved gets none of them: no secrets, no credentials.
    """
    is_preview = s.get(Preview, env.id) is not None  # then found in the session by the others
    if is_preview and unapproved_fork(s, env):
        return []
    rows = s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id))
    user = {row.key: cp.box.decrypt(row.value) for row in rows}
    preview = preview_variables(cp, s, env) if is_preview else None
    if preview is not None:
        user = {**preview, **user}
    return merge_variables(user, service_values(cp, s, env))


def snapshot_variables(
    cp: ControlPlane, s: Session, env: Environment
) -> tuple[dict[str, str], dict[str, str]]:
    """The variables a new deployment snapshots, and which of them came from which service."""
    merged = merged_variables(cp, s, env)
    values = {v.key: v.value for v in merged}
    sources = {v.key: v.source.removeprefix("service ") for v in merged if v.source != "user"}
    return values, sources


def deployment_endpoints(cp: ControlPlane, s: Session, d: Deployment) -> tuple[Endpoint, ...]:
    """Where a deployment's sandbox may connect on the host: the services whose variables its
    snapshot holds (a service made later, or whose variables the user overrode, is not one)."""
    names = sorted(set((d.env_sources or {}).values()))
    if not names:
        return ()
    rows = s.scalars(select(Service).where(Service.name.in_(names), Service.port != 0))
    found = set()
    for row in rows:
        host = cp.services.endpoint(record_of(cp, row)).host
        if _routable(host):  # an external server named by DNS, or on loopback: not listable
            found.add(Endpoint(host, row.port))
    return tuple(sorted(found, key=lambda e: (e.host, e.port)))


def _routable(host: str) -> bool:
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return not address.is_loopback


def service_view(cp: ControlPlane, s: Session, row: Service, *, reveal: bool = False) -> Json:
    env = s.get(Environment, row.environment_id)
    assert env is not None
    project = s.get(Project, env.project_id)
    assert project is not None
    record = record_of(cp, row)
    endpoint = cp.services.endpoint(record)
    variables = service_variables(endpoint) if row.port else {}
    view: Json = {
        "name": row.name,
        "kind": row.kind,
        "project": project.name,
        "environment": env.name,
        "status": "ready" if row.port else "provisioning",
        "location": row.location,
        "host": endpoint.host,
        "port": row.port,
        "user": endpoint.user,
        "database": endpoint.database,
        "connection_limit": row.connection_limit,
        "maxmemory_mb": (
            (row.maxmemory_mb or cp.settings.redis_maxmemory_mb) if row.kind == "redis" else None
        ),
        "variables": sorted(variables),
        "created_at": iso(row.created_at),
        "rotated_at": iso(row.rotated_at) if row.rotated_at else None,
        "previous_credentials_valid": bool(record.previous),
    }
    if reveal:
        view["credentials"] = variables
    return view


def project_services(
    cp: ControlPlane, s: Session, project: str, environment: str | None
) -> list[Json]:
    proj = get_project(s, project)
    envs = {
        e.id: e for e in s.scalars(select(Environment).where(Environment.project_id == proj.id))
    }
    if environment is not None:
        envs = {i: e for i, e in envs.items() if e.name == environment}
        if not envs:
            raise NotFound(f"project {project} has no environment named {environment!r}")
    rows = s.scalars(
        select(Service).where(Service.environment_id.in_(list(envs))).order_by(Service.name)
    )
    return [service_view(cp, s, r) for r in rows]


def start_services(cp: ControlPlane) -> list[str]:
    with cp.store.read() as s:
        records = [record_of(cp, r) for r in s.scalars(select(Service)) if r.port]
    if not records:
        return []
    return cp.services.start(records)


def stop_services(cp: ControlPlane) -> None:
    with cp.store.read() as s:
        records = [record_of(cp, r) for r in s.scalars(select(Service)) if r.port]
    cp.services.stop(records)


def variable_listing(cp: ControlPlane, s: Session, env: Environment, mask: str) -> list[Json]:
    """The environment's variables as a new deployment would get them, each with its source."""
    user_rows = {r.key: r for r in s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id))}
    out = []
    for v in merged_variables(cp, s, env):
        row = user_rows.get(v.key)
        secret = row.secret if row is not None else v.key in SECRET_SERVICE_VARIABLES
        item: Json = {
            "key": v.key,
            "value": mask if secret else v.value,
            "secret": secret,
            "source": v.source,
            "updated_at": iso(row.updated_at) if row is not None else None,
        }
        if v.shadows:
            item["overrides"] = f"service {v.shadows}"
        out.append(item)
    return out


def deployment_service_variables(sources: Mapping[str, str] | None) -> dict[str, str]:
    return dict(sorted((sources or {}).items()))
