"""``POST /api/webhooks/github``: GitHub deliveries become deployments.

The order of work is the security argument, top to bottom:

1. size: a declared or actual body over 25 MB is refused (413) before any HMAC is computed;
2. signature: the raw body is checked against the webhook secret of every project (or the one
   named by ``?project=``) in constant time; no match is 401 and nothing is parsed or stored;
3. decision (`phemeral.github.events`): ping → 200, other events, tags, deletions and unmapped
   branches → 202 with the reason, unreadable payload → 400;
4. the use-case (`phemeral.deploys.deliveries`): a push creates one deployment per mapped
   environment, a pull request opens, updates or closes its preview; keyed by
   ``X-GitHub-Delivery`` (a redelivery returns the deployment it created the first time);
5. builds run in the background (the build queue); commit statuses and preview comments are
   sent when the project has a GitHub credential, an access token or a GitHub App
   (`phemeral.deploys.github_auth`, `phemeral.deploys.reporting`). The answer goes
   back as soon as the deployments are stored.

The code is always fetched from the project's configured repository URL with its own token;
nothing in the payload chooses what is fetched except the commit SHA.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from phemeral.api.deps import CP
from phemeral.api.errors import error_response
from phemeral.deploys import ControlPlane
from phemeral.deploys.deliveries import (
    Candidate,
    Delivered,
    deliver_pull_request,
    deploy_push,
    verify_delivery,
)
from phemeral.deploys.reporting import Watch, reporting_for
from phemeral.github.events import (
    MAX_BODY_BYTES,
    Decision,
    Ignored,
    Malformed,
    Pong,
    PullRequestDelivery,
    PushEvent,
    parse_delivery,
    too_large,
)

router = APIRouter(tags=["webhooks"])


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
    """Receive a GitHub delivery (signed with the project's webhook secret; no bearer token).

    Handles ``push`` (deploy mapped branches), ``pull_request`` (preview environments
    ``pr-{number}``) and ``ping``.
    """
    if too_large(request.headers.get("content-length")):
        return _too_large()
    body = await _read_body(request)
    if body is None:
        return _too_large()
    headers = request.headers
    # One trip off the event loop (a large payload takes a while to check and parse, and every
    # API request shares the loop): signature, then payload, then a push's deployments.
    verified, decision, pushed = await asyncio.to_thread(
        _receive,
        cp,
        request.query_params.get("project"),
        body,
        headers.get("x-hub-signature-256"),
        headers.get("x-github-event"),
        headers.get("x-github-delivery"),
        headers.get("content-type"),
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
    if isinstance(decision, PullRequestDelivery):
        return await _pull_request(request, cp, decision, verified, datetime.now(UTC))
    assert pushed is not None
    if isinstance(pushed, Ignored):
        return _ignored(pushed)
    return _accepted(request, cp, pushed)


def _receive(
    cp: ControlPlane,
    only: str | None,
    body: bytes,
    signature: str | None,
    event: str | None,
    delivery: str | None,
    content_type: str | None,
) -> tuple[list[Candidate], Decision, list[Delivered] | Ignored | None]:
    """Who signed it (`Unauthorized` if nobody), what it is, and for a push its deployments."""
    verified = verify_delivery(cp, only, body, signature)
    decision = parse_delivery(event, delivery, body, content_type)
    pushed = None
    if isinstance(decision, PushEvent):
        pushed = deploy_push(cp, decision, verified, datetime.now(UTC))
    return verified, decision, pushed


async def _pull_request(
    request: Request,
    cp: ControlPlane,
    delivery: PullRequestDelivery,
    verified: list[Candidate],
    received_at: datetime,
) -> JSONResponse:
    result = await asyncio.to_thread(deliver_pull_request, cp, delivery, verified, received_at)
    if isinstance(result, Ignored):
        return _ignored(result)
    delivered, retirement = result
    if cp.runtime is not None:
        for deployment_id in retirement.deployment_ids:
            await cp.runtime.retire(deployment_id)
    if not delivered:
        return JSONResponse(
            {
                "status": "closed",
                "pull_request": delivery.event.number,
                "retired": list(retirement.deployment_ids),
            },
            status_code=200,
        )
    return _accepted(request, cp, delivered)


def _ignored(decision: Ignored) -> JSONResponse:
    return JSONResponse(
        {"status": "ignored", "reason": decision.reason}, status_code=decision.status
    )


def _accepted(request: Request, cp: ControlPlane, delivered: list[Delivered]) -> JSONResponse:
    items: list[dict[str, Any]] = []
    for d in delivered:
        item: dict[str, Any] = {
            "id": d.deployment.id,
            "project": d.target.project,
            "environment": d.target.environment,
            "commit": d.commit,
            "branch": d.branch,
            "url": cp.settings.url_for_label(d.deployment.id),
            "created": d.created,
        }
        if d.pull_request is not None:
            item["pull_request"] = d.pull_request
            item["secrets"] = not d.fork_without_secrets
        items.append(item)
        if d.created and d.reports and d.full_name:
            reporting_for(cp).watch(
                Watch(
                    deployment_id=d.deployment.id,
                    project=d.target.project,
                    environment=d.target.environment,
                    full_name=d.full_name,
                    sha=d.commit,
                    pull_request=d.pull_request,
                    fork_without_secrets=d.fork_without_secrets,
                )
            )
    created_any = any(item["created"] for item in items)
    return JSONResponse(
        {"status": "accepted" if created_any else "duplicate", "deployments": items},
        status_code=201 if created_any else 200,
    )
