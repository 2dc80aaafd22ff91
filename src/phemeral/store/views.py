"""The read side: JSON-ready views of projects, environments, deployments, logs and audits.

Lists page by keyset (the sort key of the last item returned), so a page boundary never moves
when rows are inserted meanwhile: projects by name, deployments newest first by (created_at, id),
log lines by id. A page of projects is viewed in a fixed number of statements, not one per project.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from phemeral.errors import InvalidInput, NotFound
from phemeral.models import InstanceState
from phemeral.settings import Settings
from phemeral.store.cursor import clamp_limit, decode_cursor, encode_cursor
from phemeral.store.schema import (
    BuildLogRow,
    CustomDomain,
    Deployment,
    Domain,
    Environment,
    Project,
    Promotion,
    RuntimeLogRow,
)

Json = dict[str, Any]
MASK = "••••••"


def iso(value: datetime | None) -> str | None:
    """UTC, microseconds, ``Z``: ``2026-11-27T10:00:00.123456Z`` (cursors need every digit)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def project_view(s: Session, project: Project, settings: Settings) -> Json:
    return project_views(s, [project], settings)[0]


def project_views(s: Session, projects: Sequence[Project], settings: Settings) -> list[Json]:
    """The views of ``projects`` in their order, in three statements however many there are
    (environments, domains, custom domains: each one query for all of them)."""
    by_id = {p.id: p for p in projects}
    envs: list[Environment] = []
    if by_id:
        envs = list(
            s.scalars(
                select(Environment)
                .where(Environment.project_id.in_(by_id))
                .order_by(Environment.project_id, Environment.id)
            )
        )
    env_views: dict[int, list[Json]] = defaultdict(list)
    for env, view in zip(envs, environment_views(s, envs, by_id, settings), strict=True):
        env_views[env.project_id].append(view)
    return [
        {
            "name": project.name,
            "uid": project.uid,
            "repo_url": project.repo_url,
            "root_dir": project.root_dir,
            "start_command": project.start_command,
            "python_version": project.python_version,
            "package_manager": project.package_manager,
            "build_timeout": project.build_timeout,
            "has_webhook_secret": project.webhook_secret is not None,
            "has_repo_token": project.repo_token is not None,
            "github_app": github_app_view(project, settings),
            "preview_data": project.preview_data,
            "workers": project.workers,
            "created_at": iso(project.created_at),
            "environments": env_views[project.id],
        }
        for project in projects
    ]


def project_page(s: Session, settings: Settings, *, cursor: str | None, limit: int | None) -> Json:
    """By name; ``next_cursor`` is None on the last page. A page costs four statements
    whatever the number of projects (the page, then `project_views`)."""
    size = clamp_limit(limit)
    query = select(Project)
    if cursor:
        (after,) = decode_cursor(cursor, str)
        query = query.where(Project.name > after)
    rows = list(s.scalars(query.order_by(Project.name).limit(size + 1)))
    page = rows[:size]
    return {
        "items": project_views(s, page, settings),
        "next_cursor": encode_cursor(page[-1].name) if len(rows) > size else None,
    }


def github_app_view(project: Project, settings: Settings) -> Json | None:
    """Which GitHub App the project's tokens come from (never its key), or None."""
    if project.github_app_id is not None:
        app_id, source = project.github_app_id, "project"
    elif settings.github_app_id is not None:
        app_id, source = settings.github_app_id, "server"
    else:
        return None
    return {
        "app_id": app_id,
        "source": source,
        "installation_id": project.github_installation_id,  # None: asked of GitHub
    }


def environment_view(s: Session, env: Environment, project: Project, settings: Settings) -> Json:
    return environment_views(s, [env], {project.id: project}, settings)[0]


def environment_views(
    s: Session,
    envs: Sequence[Environment],
    projects: Mapping[int, Project],
    settings: Settings,
) -> list[Json]:
    """The views of ``envs`` in their order (``projects`` by id holds each one's project), in
    two statements however many there are."""
    ids = [env.id for env in envs]
    domains: dict[int, list[Domain]] = defaultdict(list)
    custom: dict[int, list[str]] = defaultdict(list)
    if ids:
        for d in s.scalars(
            select(Domain)
            .where(Domain.environment_id.in_(ids))
            .order_by(Domain.environment_id, Domain.is_default.desc(), Domain.label)
        ):
            domains[d.environment_id].append(d)
        for env_id, name in s.execute(
            select(CustomDomain.environment_id, CustomDomain.name)
            .where(CustomDomain.environment_id.in_(ids))
            .order_by(CustomDomain.environment_id, CustomDomain.name)
        ):
            custom[env_id].append(name)
    return [
        {
            "name": env.name,
            "project": projects[env.project_id].name,
            "branches": list(env.branches),
            "domains": [
                {"label": d.label, "url": settings.url_for_label(d.label), "default": d.is_default}
                for d in domains[env.id]
            ],
            "custom_domains": custom[env.id],
            "https_redirect": env.https_redirect,
            "hsts_max_age": env.hsts_max_age,
            "current_deployment_id": env.current_deployment_id,
            "created_at": iso(env.created_at),
        }
        for env in envs
    ]


def deployment_view(
    s: Session, d: Deployment, settings: Settings, instances: InstanceState | None = None
) -> Json:
    project = s.get_one(Project, d.project_id)
    env = s.get_one(Environment, d.environment_id)
    state = instances or InstanceState(instances=0, state="stopped")
    return {
        "id": d.id,
        "project": project.name,
        "environment": env.name,
        "status": d.status,
        "failure_reason": d.failure_reason,
        "url": settings.url_for_label(d.id),
        "trigger": {
            "kind": d.trigger,
            "commit": d.commit_sha,
            "branch": d.branch,
            "pusher": d.pusher,
            "delivery_id": d.delivery_id,
            "push_sequence": d.push_seq,
            "by": d.created_by,
        },
        "commit": d.commit_sha,
        "settings": d.settings,
        "start_command": d.start_command,
        "start_command_source": d.start_command_source,
        "is_current": env.current_deployment_id == d.id,
        # variable name → the service it came from, as snapshotted at creation
        "service_variables": dict(sorted((d.env_sources or {}).items())),
        "pinned": d.pinned,
        "collected_at": iso(d.collected_at),  # its release was removed by retention
        "instances": {
            "instances": state.instances,
            "state": state.state,
            "tier": state.tier,
            "last_wake_at": iso(state.last_wake_at),
            "last_wake_ms": state.last_wake_ms,
            "last_wake_phases": state.last_wake_phases,
            "idle_memory_kb": state.idle_memory_kb,
            "idle_pss_kb": state.idle_pss_kb,
            "idle_swap_kb": state.idle_swap_kb,
            "hot_set_in": state.hot_set_in,
            "expected_wake_ms": state.expected_wake_ms,
            "restarts": state.restarts,
            "last_exit": state.last_exit,
            "wake_path": state.wake_path,
        },
        "created_at": iso(d.created_at),
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
        "release_command": (d.release or {}).get("release_command"),
        "processes": process_views(d.release, state),
    }


def process_views(release: dict[str, Any] | None, state: InstanceState) -> list[Json]:
    """The extra processes a release declares, with what the runtime says of each (they run
    only while the deployment is current)."""
    live = {p.name: p for p in state.processes}
    out: list[Json] = []
    for name, command in sorted(((release or {}).get("processes") or {}).items()):
        seen = live.get(name)
        out.append(
            {
                "name": name,
                "command": command,
                "state": seen.state if seen else "stopped",
                "restarts": seen.restarts if seen else 0,
                "last_exit": seen.last_exit if seen else None,
                "started_at": iso(seen.started_at) if seen else None,
            }
        )
    return out


def list_deployments(
    s: Session,
    project: Project,
    settings: Settings,
    *,
    environment: Environment | None,
    cursor: str | None,
    limit: int | None,
    instances: Callable[[str], InstanceState] | None = None,
) -> Json:
    """Newest first; ``next_cursor`` is None on the last page."""
    size = clamp_limit(limit)
    query = select(Deployment).where(Deployment.project_id == project.id)
    if environment is not None:
        query = query.where(Deployment.environment_id == environment.id)
    if cursor:
        created, last_id = decode_cursor(cursor, str, str)
        try:
            when = datetime.fromisoformat(str(created))
        except ValueError as exc:
            raise InvalidInput("cursor is not valid; use next_cursor as given") from exc
        query = query.where(
            or_(
                Deployment.created_at < when,
                and_(Deployment.created_at == when, Deployment.id < last_id),
            )
        )
    rows = list(
        s.scalars(
            query.order_by(Deployment.created_at.desc(), Deployment.id.desc()).limit(size + 1)
        )
    )
    page = rows[:size]
    next_cursor = None
    if len(rows) > size:
        last = page[-1]
        next_cursor = encode_cursor(last.created_at.isoformat(), last.id)
    return {
        "items": [
            deployment_view(s, d, settings, instances(d.id) if instances else None) for d in page
        ],
        "next_cursor": next_cursor,
    }


def build_log_page(
    s: Session, deployment_id: str, *, cursor: str | None, limit: int | None
) -> Json:
    """Oldest first, as a build reads; the cursor continues after the last line returned."""
    size = clamp_limit(limit, default=500, maximum=5000)
    query = select(BuildLogRow).where(BuildLogRow.deployment_id == deployment_id)
    if cursor:
        (after,) = decode_cursor(cursor, int)
        query = query.where(BuildLogRow.id > after)
    rows = list(s.scalars(query.order_by(BuildLogRow.id).limit(size)))
    return {
        "lines": [
            {"timestamp": iso(r.timestamp), "stage": r.stage, "message": r.message} for r in rows
        ],
        # Always a cursor when there were lines: a live build keeps adding after it.
        "next_cursor": encode_cursor(rows[-1].id) if rows else cursor,
    }


def runtime_log_page(
    s: Session,
    deployment_id: str,
    *,
    cursor: str | None,
    limit: int | None,
    order: str = "desc",
    stream: str | None = None,
    q: str | None = None,
) -> Json:
    """Newest first by default (``order=asc`` for oldest first), filtered by stream and text."""
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be asc or desc")
    size = clamp_limit(limit, default=100, maximum=1000)
    query = select(RuntimeLogRow).where(RuntimeLogRow.deployment_id == deployment_id)
    if stream:
        query = query.where(RuntimeLogRow.stream == stream)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(RuntimeLogRow.message.ilike(pattern, escape="\\"))
    if cursor:
        (after,) = decode_cursor(cursor, int)
        query = query.where(
            RuntimeLogRow.id < after if order == "desc" else RuntimeLogRow.id > after
        )
    key = RuntimeLogRow.id.desc() if order == "desc" else RuntimeLogRow.id
    rows = list(s.scalars(query.order_by(key).limit(size + 1)))
    page = rows[:size]
    more = len(rows) > size
    return {
        "lines": [
            {
                "timestamp": iso(r.timestamp),
                "stream": r.stream,
                "instance": r.instance,
                "message": r.message,
            }
            for r in page
        ],
        "next_cursor": encode_cursor(page[-1].id) if page and (more or order == "asc") else None,
    }


def promotions_view(s: Session, env: Environment) -> list[Json]:
    rows = s.scalars(
        select(Promotion).where(Promotion.environment_id == env.id).order_by(Promotion.id.desc())
    )
    return [
        {
            "at": iso(p.created_at),
            "actor": p.actor,
            "from": p.from_deployment_id,
            "to": p.to_deployment_id,
            "reason": p.reason,
        }
        for p in rows
    ]


def get_project(s: Session, name: str, *, lock: bool = False) -> Project:
    query = select(Project).where(Project.name == name)
    project = s.scalar(query.with_for_update() if lock else query)
    if project is None:
        raise NotFound(f"no project named {name!r}")
    return project


def get_environment(s: Session, project: Project, name: str, *, lock: bool = False) -> Environment:
    query = select(Environment).where(
        Environment.project_id == project.id, Environment.name == name
    )
    env = s.scalar(query.with_for_update() if lock else query)
    if env is None:
        raise NotFound(f"project {project.name} has no environment named {name!r}")
    return env


def get_deployment(s: Session, deployment_id: str) -> Deployment:
    d = s.get(Deployment, deployment_id) if len(deployment_id) <= 12 else None
    if d is None:
        raise NotFound(f"no deployment with id {deployment_id!r}")
    return d
