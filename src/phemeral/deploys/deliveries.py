"""GitHub deliveries as use-cases: who signed it, and the deployments a push or a pull request
creates. The HTTP handler (`phemeral.api.webhooks`) only reads the body and answers.

- `verify_delivery`: the projects whose webhook secret signed the raw body (constant time, every
  project checked, no early exit); `Unauthorized` when none did.
- `deploy_push`: one deployment per mapped environment, idempotent on ``X-GitHub-Delivery``.
- `deliver_pull_request`: open / resume / close the preview ``pr-{number}`` and deploy its head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from phemeral.deploys.github_auth import has_github_credentials
from phemeral.deploys.lifecycle import Trigger, deploy
from phemeral.deploys.plane import ControlPlane
from phemeral.deploys.previews import (
    close_preview,
    open_preview,
    provision_preview_services,
    remove_preview_services,
)
from phemeral.errors import Unauthorized
from phemeral.github.events import (
    HookProject,
    Ignored,
    PullRequestDelivery,
    PushEvent,
    Target,
    connected_projects,
    plan_push,
    push_sequence,
)
from phemeral.github.pulls import PullAction, preview_environment
from phemeral.github.repository import github_full_name
from phemeral.github.signature import signature_matches, well_formed
from phemeral.models import TriggerKind
from phemeral.store.schema import Deployment, Environment, Project


@dataclass(frozen=True)
class Candidate:
    """A project that signed the delivery; ``secret`` stays in memory only. ``reports``: it has
    a GitHub credential (`phemeral.deploys.github_auth`), so statuses are sent."""

    hook: HookProject
    secret: str
    reports: bool


@dataclass(frozen=True)
class Delivered:
    """One deployment a delivery created (or found again, for a redelivery)."""

    deployment: Deployment
    target: Target
    created: bool
    commit: str
    branch: str
    full_name: str | None  # owner/name for GitHub's API (statuses, comments)
    reports: bool  # the project has a GitHub credential: statuses and comments are sent
    pull_request: int | None = None
    fork_without_secrets: bool = False


@dataclass(frozen=True)
class Retirement:
    """Compute to stop after a preview closed or was suspended (the caller awaits it)."""

    deployment_ids: tuple[str, ...]


@dataclass(frozen=True)
class _Row:
    project_id: int
    name: str
    repo_url: str | None
    sealed_secret: str
    sealed_token: str | None
    github_app_id: int | None


# Decrypted webhook secrets by their ciphertext: a delivery tries every project's secret, and
# Fernet decryption per project per delivery would dominate the answer time.
_OPENED: dict[str, str] = {}
_OPENED_MAX = 10_000


def _open(cp: ControlPlane, sealed: str) -> str:
    plain = _OPENED.get(sealed)
    if plain is None:
        plain = cp.box.decrypt(sealed)
        if len(_OPENED) >= _OPENED_MAX:
            _OPENED.clear()
        _OPENED[sealed] = plain
    return plain


def _rows(cp: ControlPlane, only: str | None) -> list[_Row]:
    query = select(
        Project.id,
        Project.name,
        Project.repo_url,
        Project.webhook_secret,
        Project.repo_token,
        Project.github_app_id,
    ).where(Project.webhook_secret.is_not(None))
    if only:
        query = query.where(Project.name == only)
    with cp.store.read() as s:
        return [
            _Row(project_id, name, repo_url, secret, token, app_id)
            for project_id, name, repo_url, secret, token, app_id in s.execute(
                query.order_by(Project.name)
            )
            if secret is not None
        ]


def verify_delivery(
    cp: ControlPlane, only: str | None, body: bytes, header: str | None
) -> list[Candidate]:
    """The projects whose webhook secret signed ``body``; `Unauthorized` when there are none."""
    if header is None:
        raise Unauthorized("missing X-Hub-Signature-256 header; deliveries must be signed")
    if not well_formed(header):
        raise Unauthorized(
            "malformed X-Hub-Signature-256 header (expected sha256= and 64 lowercase hex digits)"
        )
    rows = _rows(cp, only)
    # Every project is checked (no early exit), so timing does not tell which one matched.
    matched = [r for r in rows if signature_matches(_open(cp, r.sealed_secret), body, header)]
    if not matched:
        raise Unauthorized("X-Hub-Signature-256 does not match the webhook secret of any project")
    with cp.store.read() as s:
        ids = [r.project_id for r in matched]
        branches: dict[int, dict[str, list[str]]] = {i: {} for i in ids}
        envs = s.execute(
            select(Environment.project_id, Environment.name, Environment.branches).where(
                Environment.project_id.in_(ids)
            )
        )
        for project_id, env, patterns in envs:
            branches[project_id][env] = list(patterns or [])
    return [
        Candidate(
            HookProject(r.name, r.repo_url, branches[r.project_id]),
            _open(cp, r.sealed_secret),
            has_github_credentials(cp, r.github_app_id, r.sealed_token),
        )
        for r in matched
    ]


def delivery_key(delivery_id: str, target: Target, first: bool) -> str:
    """The idempotency key of one deployment of a delivery (the GUID itself for the first)."""
    if first:
        return delivery_id
    digest = hashlib.sha256(f"{target.project}/{target.environment}".encode()).hexdigest()
    return f"{delivery_id}:{digest[:16]}"


def _full_name(candidate: Candidate, payload_name: str | None) -> str | None:
    return github_full_name(candidate.hook.repo_url or "") or payload_name


def deploy_push(
    cp: ControlPlane, push: PushEvent, verified: list[Candidate], received_at: datetime
) -> list[Delivered] | Ignored:
    """The deployments of a push (one per mapped environment of every connected project)."""
    plan = plan_push(push, [c.hook for c in verified])
    if isinstance(plan, Ignored):
        return plan
    by_name = {c.hook.name: c for c in verified}
    out = []
    for index, target in enumerate(plan):
        key = delivery_key(push.delivery_id, target, index == 0)
        trigger = Trigger(
            kind=TriggerKind.PUSH,
            actor=f"github push by {push.pusher or 'unknown'}",
            commit=push.after,
            branch=push.branch,
            pusher=push.pusher,
            delivery_id=key,
            push_seq=push_sequence(push.pushed_at, received_at, None),
            parent_commit=push.before,
            repository=_full_name(by_name[target.project], push.full_name),
        )
        deployment, created = _deploy_once(cp, target, trigger)
        candidate = by_name[target.project]
        out.append(
            Delivered(
                deployment,
                target,
                created,
                push.after,
                push.branch,
                _full_name(candidate, push.full_name),
                candidate.reports,
            )
        )
    return out


def deliver_pull_request(
    cp: ControlPlane,
    delivery: PullRequestDelivery,
    verified: list[Candidate],
    received_at: datetime,
) -> tuple[list[Delivered], Retirement] | Ignored:
    """Open, update or close the preview of a pull request in every connected project."""
    connected = connected_projects(delivery.repository, [c.hook for c in verified])
    if isinstance(connected, Ignored):
        return connected
    by_name = {c.hook.name: c for c in verified}
    event = delivery.event
    environment = preview_environment(event.number)
    out: list[Delivered] = []
    retire: list[str] = []
    for index, hook in enumerate(connected):
        target = Target(hook.name, environment)
        if event.action is PullAction.CLOSE:
            retire += close_preview(cp, hook.name, event.number)
            remove_preview_services(cp, hook.name, event.number)
            continue
        opened = open_preview(cp, hook.name, event)
        retire += opened.retire
        provisioned = provision_preview_services(cp, hook.name, environment)
        by = event.sender or "unknown"
        trigger = Trigger(
            kind=TriggerKind.PUSH,
            actor=f"pull request #{event.number} by {by}",
            commit=event.head_sha,
            branch=event.head_ref or None,
            pusher=by,
            delivery_id=delivery_key(event.delivery_id, target, index == 0),
            push_seq=push_sequence(None, received_at, None),
            repository=_full_name(by_name[hook.name], delivery.repository.full_name),
        )
        deployment, created = _deploy_once(cp, target, trigger)
        if created:
            for line in provisioned:
                cp.logs.build_log(deployment.id).write("queue", line)
        candidate = by_name[hook.name]
        out.append(
            Delivered(
                deployment,
                target,
                created,
                event.head_sha,
                event.head_ref,
                _full_name(candidate, delivery.repository.full_name),
                candidate.reports,
                pull_request=event.number,
                fork_without_secrets=opened.fork and not opened.approved,
            )
        )
    return out, Retirement(tuple(retire))


def _deploy_once(cp: ControlPlane, target: Target, trigger: Trigger) -> tuple[Deployment, bool]:
    """Create (or find) the deployment of this delivery; concurrent duplicates make one."""
    for attempt in range(3):
        try:
            return deploy(cp, target.project, target.environment, trigger)
        except IntegrityError:  # a concurrent identical delivery inserted it first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
