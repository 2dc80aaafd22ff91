"""Live updates as server-sent events: new build log lines (resumable by position, then the
final status) and runtime log lines as they arrive; both poll the API by cursor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from phemeral.dashboard import present
from phemeral.dashboard.control import JSON, PlatformApi
from phemeral.dashboard.deployments import BUILD_LOG_PAGE
from phemeral.dashboard.page import Pages

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


class LiveEvents(Pages):
    async def build_events(
        self, request: Request, deployment_id: str, cursor: str = "", seen: int = 0
    ) -> Response:
        if self.session(request) is None:
            return Response("sign in first", status_code=401)
        # a browser reconnecting after a drop resumes after the last line it received
        resumed = present.parse_log_position(request.headers.get("last-event-id"))
        start = resumed or (cursor or None, max(0, seen))
        api = self.api(request)
        return _sse(self.follow_build(request, api, deployment_id, *start), api)

    async def follow_build(
        self,
        request: Request,
        api: PlatformApi,
        deployment_id: str,
        cursor: str | None,
        seen: int,
    ) -> AsyncIterator[str]:
        """New build log lines as SSE `data:` events (each `id:` its position in the log, for
        resuming), then `event: end` with the final status."""
        quiet = 0.0
        final: object = None
        while not await request.is_disconnected():
            page, nxt = await api.build_log(deployment_id, cursor=cursor, limit=BUILD_LOG_PAGE)
            fresh = page[seen:]
            for offset, line in enumerate(fresh, start=seen + 1):
                position = present.log_position(cursor, offset)
                yield f"id: {position}\ndata: {json.dumps(line, separators=(',', ':'))}\n\n"
            if nxt and page:
                cursor, seen = nxt, 0
            else:
                seen = len(page)
            if fresh:
                quiet = 0.0
                continue
            if final is not None:  # read once more after the status changed: nothing left
                yield f"event: end\ndata: {json.dumps({'status': final})}\n\n"
                return
            status = (await api.deployment(deployment_id)).get("status")
            if status != "building":
                final = status  # lines written just before the change are read next round
                continue
            await asyncio.sleep(POLL_SECONDS)
            quiet += POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"

    async def runtime_events(
        self, request: Request, deployment_id: str, stream: str = "", q: str = ""
    ) -> Response:
        if self.session(request) is None:
            return Response("sign in first", status_code=401)
        api = self.api(request)
        return _sse(self.follow_runtime(request, api, deployment_id, stream, q), api)

    async def follow_runtime(
        self, request: Request, api: PlatformApi, deployment_id: str, stream: str, q: str
    ) -> AsyncIterator[str]:
        """Runtime log lines that arrive from now on, oldest first, as SSE `data:` events."""

        async def newest() -> list[JSON]:
            lines, _ = await api.runtime_log(
                deployment_id, limit=200, order="desc", stream=stream or None, text=q or None
            )
            return lines

        top = _line_key((await newest())[:1])
        yield "event: ready\ndata: {}\n\n"  # lines from here on are new to the page
        quiet = 0.0
        while not await request.is_disconnected():
            await asyncio.sleep(POLL_SECONDS)
            lines = await newest()
            fresh: list[JSON] = []
            for line in lines:
                if _line_key([line]) == top:
                    break
                fresh.append(line)
            if lines:
                top = _line_key(lines[:1])
            for line in reversed(fresh):
                yield f"data: {json.dumps(line, separators=(',', ':'))}\n\n"
            quiet = 0.0 if fresh else quiet + POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"


def _line_key(lines: list[JSON]) -> tuple[object, ...] | None:
    if not lines:
        return None
    line = lines[0]
    return (line.get("timestamp"), line.get("instance"), line.get("stream"), line.get("message"))


def _sse(events: AsyncIterator[str], api: PlatformApi) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            async for event in events:
                yield event
        finally:
            await api.aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
