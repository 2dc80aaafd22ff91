"""One exchange on a client connection: a request, the app's response, and what it cost.

A `ClientConnection` (`phemeral.router.proxy`) holds at most one `Exchange` at a time, made
fresh for each routed request and dropped when the response ends, so nothing of one request
can leak into the next. What outlives a request (the read buffer, deadlines, flow control)
stays on the connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phemeral.router.chunked import ChunkedDecoder
    from phemeral.router.head import RequestHead
    from phemeral.router.upstream import UpstreamConnection


class Exchange:
    """The per-request state of a client connection (slots: one per request, cheap)."""

    __slots__ = (
        "body_done",
        "body_left",
        "close_after",
        "connecting",
        "decoder",
        "deployment_id",
        "early",
        "early_size",
        "extra_head",
        "key",
        "request",
        "retried",
        "sent",
        "started",
        "status",
        "tunnel",
        "upstream",
        "upstream_head",
        "wake_ms",
    )

    def __init__(
        self,
        request: RequestHead,
        key: str,
        deployment_id: str | None,
        *,
        started: float,
        extra_head: bytes,
    ) -> None:
        self.request = request
        self.key = key  # the upstream pool's key: a deployment id, or the control plane
        self.deployment_id = deployment_id  # None: the control plane
        self.started = started
        self.extra_head = extra_head  # lines added to the response head (HSTS over HTTPS)
        self.close_after = not request.keep_alive  # the client connection ends with it
        self.upstream: UpstreamConnection | None = None
        self.upstream_head = b""  # the request head as the app receives it
        self.connecting: asyncio.Task[None] | None = None
        self.early: list[bytes] = []  # body bytes that arrived before the upstream did
        self.early_size = 0
        self.body_left = 0  # Content-Length bytes still to forward
        self.decoder: ChunkedDecoder | None = None  # a chunked request body
        self.body_done = True
        self.status = 0  # the response status, once known
        self.sent = 0  # bytes written to the client
        self.wake_ms: float | None = None  # time spent waiting for the deployment to wake
        self.retried = False  # a reused upstream closed before answering: retried once
        self.tunnel = False  # after a 101: bytes flow both ways untouched
