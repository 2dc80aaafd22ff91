"""``POST /api/webhooks/github``: GitHub push deliveries become deployments.

The order of work is the security argument, top to bottom:

1. size: a declared or actual body over 25 MB is refused (413) before any HMAC is computed;
2. signature: the raw body is checked against the webhook secret of every project (or the one
   named by ``?project=``) in constant time; no match is 401 and nothing is parsed or stored;
3. decision (`phemeral.github.events`): ping → 200, other events, tags, deletions and unmapped
   branches → 202 with the reason, unreadable payload → 400;
4. persist: one transaction per target environment creates the deployment, keyed by
   ``X-GitHub-Delivery`` (a redelivery returns the deployment it created the first time);
5. build in the background (the build queue), and report commit statuses when the project has
   an access token. The answer goes back as soon as the deployment is stored.

The code is always fetched from the project's configured repository URL with its own token;
nothing in the payload chooses what is fetched except the commit SHA.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from phemeral import deploys
from phemeral.api.deps import CP
from phemeral.api.errors import error_response
from phemeral.deploys import ControlPlane, Trigger
from phemeral.errors import Unauthorized
from phemeral.github.events import (
    MAX_BODY_BYTES,
    HookProject,
    Ignored,
    Malformed,
    Pong,
    PushEvent,
    Target,
    parse_delivery,
    plan_push,
    push_sequence,
    too_large,
)
from phemeral.github.repository import github_full_name
from phemeral.github.signature import signature_matches, well_formed
from phemeral.github.statuses import CommitState, StatusReporter, describe, state_for
from phemeral.models import DeploymentStatus, TriggerKind
from phemeral.store.schema import Deployment, Environment, Project

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

STATUS_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class _Candidate:
    """A project that may have signed the delivery; ``secret``/``token`` stay in memory only."""

    hook: HookProject
    secret: str
    token: str | None


@dataclass(frozen=True)
class _Row:
    project_id: int
    name: str
    repo_url: str | None
    sealed_secret: str
    sealed_token: str | None


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
        Project.id, Project.name, Project.repo_url, Project.webhook_secret, Project.repo_token
    ).where(Project.webhook_secret.is_not(None))
    if only:
        query = query.where(Project.name == only)
    with cp.store.read() as s:
        return [
            _Row(project_id, name, repo_url, secret, token)
            for project_id, name, repo_url, secret, token in s.execute(query.order_by(Project.name))
            if secret is not None
        ]


def _verify(
    cp: ControlPlane, only: str | None, body: bytes, header: str | None
) -> list[_Candidate]:
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
        _Candidate(
            HookProject(r.name, r.repo_url, branches[r.project_id]),
            _open(cp, r.sealed_secret),
            cp.box.decrypt(r.sealed_token) if r.sealed_token else None,
        )
        for r in matched
    ]


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or None as soon as it grows past `MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> JSONResponse:
    return error_response(
        413, "payload_too_large", f"webhook payloads are limited to {MAX_BODY_BYTES} bytes"
    )


@router.post("/webhooks/github", status_code=202)
async def github_webhook(request: Request, cp: CP) -> JSONResponse:
    """Receive a GitHub delivery (signed with the project's webhook secret; no bearer token)."""
    if too_large(request.headers.get("content-length")):
        return _too_large()
    body = await _read_body(request)
    if body is None:
        return _too_large()
    header = request.headers.get("x-hub-signature-256")
    only = request.query_params.get("project")
    verified = await asyncio.to_thread(_verify, cp, only, body, header)

    # Off the event loop: a large payload takes a while to parse, and the router shares it.
    decision = await asyncio.to_thread(
        parse_delivery,
        request.headers.get("x-github-event"),
        request.headers.get("x-github-delivery"),
        body,
        request.headers.get("content-type"),
    )
    if isinstance(decision, Malformed):
        return error_response(decision.status, "invalid_payload", decision.reason)
    if isinstance(decision, Pong):
        names = [c.hook.name for c in verified]
        return JSONResponse(
            {"status": "pong", "zen": decision.zen, "hook_id": decision.hook_id, "projects": names},
            status_code=decision.status,
        )
    if isinstance(decision, Ignored):
        return _ignored(decision)
    return await _push(request, cp, decision, verified)


def _ignored(decision: Ignored) -> JSONResponse:
    return JSONResponse(
        {"status": "ignored", "reason": decision.reason}, status_code=decision.status
    )


def delivery_key(delivery_id: str, target: Target, first: bool) -> str:
    """The idempotency key of one deployment of a delivery (the GUID itself for the first)."""
    if first:
        return delivery_id
    digest = hashlib.sha256(f"{target.project}/{target.environment}".encode()).hexdigest()
    return f"{delivery_id}:{digest[:16]}"


async def _push(
    request: Request, cp: ControlPlane, push: PushEvent, verified: list[_Candidate]
) -> JSONResponse:
    plan = plan_push(push, [c.hook for c in verified])
    if isinstance(plan, Ignored):
        return _ignored(plan)
    by_name = {c.hook.name: c for c in verified}
    received_at = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    for index, target in enumerate(plan):
        key = delivery_key(push.delivery_id, target, index == 0)
        deployment, created = await asyncio.to_thread(
            _deploy_once, cp, target, push, key, received_at
        )
        items.append(
            {
                "id": deployment.id,
                "project": target.project,
                "environment": target.environment,
                "commit": push.after,
                "branch": push.branch,
                "url": cp.settings.url_for_label(deployment.id),
                "created": created,
            }
        )
        candidate = by_name[target.project]
        if created and candidate.token:
            full_name = github_full_name(candidate.hook.repo_url or "") or push.full_name
            if full_name:
                _spawn(
                    request,
                    _report_statuses(
                        cp, deployment.id, target.environment, full_name, push.after, candidate
                    ),
                )
    created_any = any(item["created"] for item in items)
    return JSONResponse(
        {"status": "accepted" if created_any else "duplicate", "deployments": items},
        status_code=201 if created_any else 200,
    )


def _parent_sequence(cp: ControlPlane, target: Target, before: str | None) -> int | None:
    if before is None:
        return None
    with cp.store.read() as s:
        return s.scalar(
            select(func.max(Deployment.push_seq))
            .join(Environment, Environment.id == Deployment.environment_id)
            .join(Project, Project.id == Deployment.project_id)
            .where(
                Project.name == target.project,
                Environment.name == target.environment,
                Deployment.commit_sha == before,
                Deployment.trigger == TriggerKind.PUSH,
            )
        )


def _deploy_once(
    cp: ControlPlane, target: Target, push: PushEvent, key: str, received_at: datetime
) -> tuple[Deployment, bool]:
    """Create (or find) the deployment of this delivery; concurrent duplicates make one."""
    seq = push_sequence(push.pushed_at, received_at, _parent_sequence(cp, target, push.before))
    trigger = Trigger(
        kind=TriggerKind.PUSH,
        actor=f"github push by {push.pusher or 'unknown'}",
        commit=push.after,
        branch=push.branch,
        pusher=push.pusher,
        delivery_id=key,
        push_seq=seq,
    )
    for attempt in range(3):
        try:
            return deploys.deploy(cp, target.project, target.environment, trigger)
        except IntegrityError:  # a concurrent identical delivery inserted it first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _spawn(request: Request, work: Any) -> None:
    tasks: set[asyncio.Task[None]] = getattr(request.app.state, "github_tasks", set())
    request.app.state.github_tasks = tasks
    task = asyncio.get_running_loop().create_task(work, name="github-commit-status")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _status_of(cp: ControlPlane, deployment_id: str) -> tuple[DeploymentStatus, str | None]:
    with cp.store.read() as s:
        d = s.get(Deployment, deployment_id)
        if d is None:
            return DeploymentStatus.FAILED, "the deployment was deleted"
        return DeploymentStatus(d.status), d.failure_reason


async def _report_statuses(
    cp: ControlPlane,
    deployment_id: str,
    environment: str,
    full_name: str,
    sha: str,
    candidate: _Candidate,
) -> None:
    """Pending now, then success or failure when the build ends; never raises."""
    assert candidate.token is not None
    reporter = StatusReporter(cp.settings.github_api_url)
    target_url = cp.settings.url_for_label(deployment_id)

    async def send(status: DeploymentStatus, reason: str | None) -> None:
        await reporter.report(
            full_name,
            sha,
            state_for(status),
            token=candidate.token or "",
            target_url=target_url,
            description=describe(status, deployment_id, environment, reason),
        )

    try:
        await send(DeploymentStatus.BUILDING, None)
        deadline = asyncio.get_running_loop().time() + 4 * (
            cp.settings.build_timeout + cp.settings.boot_timeout
        )
        while asyncio.get_running_loop().time() < deadline:
            status, reason = await asyncio.to_thread(_status_of, cp, deployment_id)
            if status is not DeploymentStatus.BUILDING:
                await send(status, reason)
                return
            await asyncio.sleep(STATUS_POLL_SECONDS)
        log.warning(
            "deployment %s still building; commit status left %s",
            deployment_id,
            CommitState.PENDING.value,
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("commit status reporting for deployment %s failed", deployment_id)
