"""Pull-request previews: one environment ``pr-{number}`` per open pull request.

    opened / reopened ─► open_preview (create or resume; suspend the oldest idle beyond the
                         limit) ─► deploy the head commit
    synchronize       ─► open_preview (resume) ─► deploy the new head
    closed            ─► close_preview: the domain goes, compute is retired; deployments and
                         their logs stay in the history
    approve           ─► a fork's preview gets the preview variables from its next build on

A preview takes the project's preview variable set (`set_preview_variables`), then its own
environment variables on top. A pull request from a fork gets neither until someone with rights
approves it (`approve_preview`). Heads are ordered like pushes: the commit graph decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from phemeral.deploys.environments import add_environment, deployment_runtime_env
from phemeral.deploys.plane import ControlPlane, find_environment, now
from phemeral.deploys.preview_set import unapproved_fork
from phemeral.deploys.routing import publish
from phemeral.deploys.services import (
    copy_services,
    delete_environment_services,
    environment_services,
)
from phemeral.errors import NotFound, PhemeralError
from phemeral.github.pulls import PullRequestEvent, preview_environment
from phemeral.models import DeploymentStatus
from phemeral.store.names import default_domain
from phemeral.store.releases import release_from_json
from phemeral.store.schema import Deployment, Domain, Environment, Preview, PreviewVar, Project
from phemeral.store.variables import check_variable
from phemeral.store.views import get_project


class PreviewState:
    OPEN = "open"
    SUSPENDED = "suspended"  # over the per-project limit: no compute, no routes, until a push
    CLOSED = "closed"


@dataclass(frozen=True)
class OpenedPreview:
    """What the webhook needs to deploy a preview's head, and what it displaced."""

    project: str
    environment: str
    number: int
    fork: bool
    approved: bool
    suspended: tuple[str, ...]  # environments suspended to stay within the limit
    retire: tuple[str, ...]  # their deployments, whose compute goes


def previews_to_suspend(open_previews: Mapping[str, datetime], limit: int, keep: str) -> list[str]:
    """The open previews (name → last active) to suspend so that at most ``limit`` stay open,
    oldest activity first; ``keep`` (the one being opened) is never chosen."""
    others = sorted((at, name) for name, at in open_previews.items() if name != keep)
    excess = len(others) + 1 - max(1, limit)
    return [name for _, name in others[: max(0, excess)]]


def open_preview(cp: ControlPlane, project: str, event: PullRequestEvent) -> OpenedPreview:
    """Create the preview environment of ``event``'s pull request, or resume it."""
    name = preview_environment(event.number)
    stamp = now()
    with cp.store.write() as s:
        proj = get_project(s, project, lock=True)
        env = _environment(s, proj, name)
        if env is None:
            env = add_environment(s, proj, name, [], [])
        preview = s.get(Preview, env.id)
        resumed = preview is not None and preview.state != PreviewState.OPEN
        if preview is None:
            preview = Preview(
                environment_id=env.id,
                project_id=proj.id,
                number=event.number,
                opened_at=stamp,
                fork=event.fork,
            )
            s.add(preview)
        elif resumed:
            _claim_default_domain(s, proj, env)
        if event.fork != preview.fork:  # a head moved between a fork and the base repository
            preview.fork, preview.approved_by = event.fork, None
        preview.state = PreviewState.OPEN
        preview.head_repo, preview.head_sha = event.head_repo, event.head_sha
        preview.active_at, preview.closed_at = stamp, None
        s.flush()
        others = {
            e.name: p.active_at
            for p, e in s.execute(
                select(Preview, Environment)
                .join(Environment, Environment.id == Preview.environment_id)
                .where(Preview.project_id == proj.id, Preview.state == PreviewState.OPEN)
            )
        }
        suspended = previews_to_suspend(others, cp.settings.preview_limit, keep=name)
        retire: list[str] = []
        for other in suspended:
            retire += _take_down(s, proj, other, PreviewState.SUSPENDED)
        opened = OpenedPreview(
            project=project,
            environment=name,
            number=event.number,
            fork=preview.fork,
            approved=preview.approved_by is not None,
            suspended=tuple(suspended),
            retire=tuple(retire),
        )
    if resumed:  # its deployments go back to the runtime (closing or suspending forgot them)
        _register_again(cp, project, name)
    publish(cp)
    return opened


def close_preview(cp: ControlPlane, project: str, number: int) -> list[str]:
    """Close the preview: its domain is removed and its deployments stop being routed; returns
    the deployments whose compute the caller retires. Deployments and logs stay."""
    with cp.store.write() as s:
        proj = get_project(s, project, lock=True)
        retire = _take_down(s, proj, preview_environment(number), PreviewState.CLOSED)
    publish(cp)
    return retire


def provision_preview_services(cp: ControlPlane, project: str, environment: str) -> list[str]:
    """Give a preview a service of each kind production has, once: empty, or with a copy of the
    data (the project's ``preview_data``). A fork's unapproved preview gets none. Returns lines
    for the build log; a failure is reported there, never raised (the app shows its own error).
    """
    with cp.store.read() as s:
        proj = get_project(s, project)
        env = find_environment(s, project, environment)
        production = find_environment(s, project, "production")
        if unapproved_fork(s, env) or environment_services(s, env.id):
            return []
        if not environment_services(s, production.id):
            return []
        with_data = proj.preview_data == "copy"
    try:
        copied = copy_services(cp, project, "production", environment, with_data=with_data)
    except PhemeralError as exc:
        return [f"preview services: could not provision them: {exc.message}"]
    return [
        f"preview services: {c['kind']} {c['name']} ({c['contents']}, from {c['from']})"
        for c in copied
    ]


def remove_preview_services(cp: ControlPlane, project: str, number: int) -> list[str]:
    """Delete a closed preview's services (each leaves a final backup in the data dir)."""
    with cp.store.read() as s:
        proj = get_project(s, project)
        env = _environment(s, proj, preview_environment(number))
        if env is None:
            return []
        env_id = env.id
    return [r.name for r in delete_environment_services(cp, [env_id])]


def approve_preview(cp: ControlPlane, project: str, number: int, actor: str) -> Preview:
    """Let a fork's preview receive the preview variables (from its next deployment on)."""
    with cp.store.write() as s:
        proj = get_project(s, project)
        preview = s.scalar(
            select(Preview).where(Preview.project_id == proj.id, Preview.number == number)
        )
        if preview is None:
            raise NotFound(f"project {project} has no preview for pull request #{number}")
        preview.approved_by = actor
        return preview


def _take_down(s: Session, proj: Project, name: str, state: str) -> list[str]:
    env = _environment(s, proj, name)
    preview = s.get(Preview, env.id) if env is not None else None
    if env is None or preview is None:
        return []
    preview.state = state
    if state == PreviewState.CLOSED:
        preview.closed_at = now()
    s.execute(delete(Domain).where(Domain.environment_id == env.id))
    return list(s.scalars(select(Deployment.id).where(Deployment.environment_id == env.id)))


def _environment(s: Session, proj: Project, name: str) -> Environment | None:
    """The project's environment ``name``, or None (a preview may not exist yet)."""
    return s.scalar(
        select(Environment).where(Environment.project_id == proj.id, Environment.name == name)
    )


def _claim_default_domain(s: Session, proj: Project, env: Environment) -> None:
    label = default_domain(proj.name, env.name)
    if s.get(Domain, label) is None:
        s.add(Domain(label=label, environment_id=env.id, is_default=True))


def _register_again(cp: ControlPlane, project: str, environment: str) -> None:
    if cp.runtime is None:
        return
    with cp.store.read() as s:
        proj = get_project(s, project)
        env = _environment(s, proj, environment)
        if env is None:
            return
        rows = s.scalars(
            select(Deployment).where(
                Deployment.environment_id == env.id,
                Deployment.status == DeploymentStatus.SUCCESSFUL,
                Deployment.release.is_not(None),
            )
        )
        releases = [
            release_from_json(d.release, deployment_runtime_env(cp, s, d, env))
            for d in rows
            if d.release is not None
        ]
    for release in releases:
        cp.runtime.register(release)


def set_preview_variables(
    cp: ControlPlane, project: str, values: Mapping[str, str], *, secret: bool
) -> list[str]:
    """Add or replace variables of the project's preview set (for deployments from now on)."""
    for key, value in values.items():
        check_variable(key, value)
    with cp.store.write() as s:
        proj = get_project(s, project)
        existing = {
            v.key: v for v in s.scalars(select(PreviewVar).where(PreviewVar.project_id == proj.id))
        }
        for key, value in values.items():
            row = existing.get(key) or PreviewVar(project_id=proj.id, key=key)
            row.value, row.secret, row.updated_at = cp.box.encrypt(value), secret, now()
            s.add(row)
    return sorted(values)


def unset_preview_variables(cp: ControlPlane, project: str, keys: list[str]) -> list[str]:
    with cp.store.write() as s:
        proj = get_project(s, project)
        rows = list(
            s.scalars(
                select(PreviewVar).where(PreviewVar.project_id == proj.id, PreviewVar.key.in_(keys))
            )
        )
        missing = set(keys) - {r.key for r in rows}
        if missing:
            raise NotFound(f"no preview variable {', '.join(sorted(missing))} in {project}")
        for row in rows:
            s.delete(row)
    return sorted(keys)


def list_previews(cp: ControlPlane, project: str) -> list[dict[str, object]]:
    with cp.store.read() as s:
        proj = get_project(s, project)
        rows = s.execute(
            select(Preview, Environment)
            .join(Environment, Environment.id == Preview.environment_id)
            .where(Preview.project_id == proj.id)
            .order_by(Preview.number)
        )
        return [
            {
                "number": p.number,
                "environment": e.name,
                "state": p.state,
                "url": cp.settings.url_for_label(default_domain(proj.name, e.name))
                if p.state == PreviewState.OPEN
                else None,
                "head_sha": p.head_sha,
                "fork": p.fork,
                "approved_by": p.approved_by,
                "current_deployment_id": e.current_deployment_id,
                "opened_at": p.opened_at.isoformat().replace("+00:00", "Z"),
                "closed_at": p.closed_at.isoformat().replace("+00:00", "Z")
                if p.closed_at
                else None,
            }
            for p, e in rows
        ]
