"""Build and runtime logs: cursor pages, and live streams as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from phemeral.api.deps import CP, Actor
from phemeral.deploys import ControlPlane
from phemeral.models import DeploymentStatus
from phemeral.store.cursor import decode_cursor, encode_cursor
from phemeral.store.schema import RuntimeLogRow
from phemeral.store.views import build_log_page, get_deployment, runtime_log_page

router = APIRouter(tags=["logs"])
Json = dict[str, Any]
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _build_page(
    cp: ControlPlane, deployment_id: str, cursor: str | None, limit: int | None
) -> Json:
    with cp.store.read() as s:
        get_deployment(s, deployment_id)
        return build_log_page(s, deployment_id, cursor=cursor, limit=limit)


@router.get("/deployments/{deployment_id}/logs/build")
def build_log(
    deployment_id: str, cp: CP, actor: Actor, cursor: str | None = None, limit: int | None = None
) -> Json:
    """Oldest first; ``next_cursor`` continues after the last line (also while building)."""
    return _build_page(cp, deployment_id, cursor, limit)


@router.get("/deployments/{deployment_id}/logs/runtime")
def runtime_log(
    deployment_id: str,
    cp: CP,
    actor: Actor,
    cursor: str | None = None,
    limit: int | None = None,
    order: str = "desc",
    stream: str | None = None,
    q: str | None = None,
) -> Json:
    with cp.store.read() as s:
        get_deployment(s, deployment_id)
        return runtime_log_page(
            s, deployment_id, cursor=cursor, limit=limit, order=order, stream=stream, q=q
        )


@router.get("/deployments/{deployment_id}/logs/build/stream")
async def build_log_stream(
    deployment_id: str, request: Request, cp: CP, actor: Actor, cursor: str | None = None
) -> StreamingResponse:
    """Every line as a ``data:`` event, then ``event: end`` with the final status."""
    await asyncio.to_thread(_build_page, cp, deployment_id, None, 1)  # 404 before streaming
    return StreamingResponse(
        _follow_build(cp, deployment_id, request, cursor),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _status(cp: ControlPlane, deployment_id: str) -> str:
    with cp.store.read() as s:
        return get_deployment(s, deployment_id).status


async def _follow_build(
    cp: ControlPlane, deployment_id: str, request: Request, cursor: str | None
) -> AsyncIterator[str]:
    idle = 0.0
    while True:
        # Read the status before the page: lines are flushed before a build is marked done,
        # so an empty page after a final status means nothing more will come.
        status = await asyncio.to_thread(_status, cp, deployment_id)
        page = await asyncio.to_thread(_build_page, cp, deployment_id, cursor, 1000)
        cursor = page["next_cursor"]
        for line in page["lines"]:
            yield f"data: {json.dumps(line)}\n\n"
        if page["lines"]:
            idle = 0.0
            continue
        if status != DeploymentStatus.BUILDING:
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if await request.is_disconnected():
            return
        idle += POLL_SECONDS
        if idle >= HEARTBEAT_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)


@router.get("/deployments/{deployment_id}/logs/runtime/stream")
async def runtime_log_stream(
    deployment_id: str,
    request: Request,
    cp: CP,
    actor: Actor,
    stream: str | None = None,
    q: str | None = None,
) -> StreamingResponse:
    """New runtime lines as they arrive (from now on), one ``data:`` event each."""
    start = await asyncio.to_thread(_newest_runtime_id, cp, deployment_id)
    return StreamingResponse(
        _follow_runtime(cp, deployment_id, request, start, stream, q),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _newest_runtime_id(cp: ControlPlane, deployment_id: str) -> int:
    with cp.store.read() as s:
        get_deployment(s, deployment_id)
        newest = s.scalar(
            select(RuntimeLogRow.id)
            .where(RuntimeLogRow.deployment_id == deployment_id)
            .order_by(RuntimeLogRow.id.desc())
            .limit(1)
        )
        return newest or 0


def _runtime_after(
    cp: ControlPlane, deployment_id: str, after: int, stream: str | None, q: str | None
) -> tuple[list[Json], int]:
    """Lines after id `after` (oldest first), and the id to continue after."""
    with cp.store.read() as s:
        page = runtime_log_page(
            s,
            deployment_id,
            cursor=encode_cursor(after),
            limit=1000,
            order="asc",
            stream=stream,
            q=q,
        )
    if not page["lines"]:
        return [], after
    (last,) = decode_cursor(page["next_cursor"], int)
    assert isinstance(last, int)
    return page["lines"], last


async def _follow_runtime(
    cp: ControlPlane,
    deployment_id: str,
    request: Request,
    after: int,
    stream: str | None,
    q: str | None,
) -> AsyncIterator[str]:
    idle = 0.0
    while not await request.is_disconnected():
        lines, after = await asyncio.to_thread(_runtime_after, cp, deployment_id, after, stream, q)
        for line in lines:
            yield f"data: {json.dumps(line)}\n\n"
        if lines:
            idle = 0.0
            continue
        idle += POLL_SECONDS
        if idle >= HEARTBEAT_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
