"""Real servers for router tests: uvicorn apps on real sockets, the router in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from phemeral.models import (
    DeploymentRoute,
    DeploymentStatus,
    RoutingSnapshot,
    RuntimeLogLine,
    Upstream,
)
from phemeral.router import RouterLimits, RouterServer, serve_router

BASE = "phemeral.localhost"


def make_app(name: str) -> Callable[..., Awaitable[None]]:
    """An ASGI app that says who it is, echoes, streams and speaks WebSocket."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": f"{name}:{text}"})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})
        path = scope["path"]
        query = scope["query_string"].decode()
        if path == "/echo":
            digest = hashlib.sha256()
            size = 0
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                digest.update(chunk)
                size += len(chunk)
                if not message.get("more_body"):
                    break
            body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
            await _respond(send, 200, body, b"application/json")
            return
        if path == "/headers":
            headers = [[k.decode(), v.decode()] for k, v in scope["headers"]]
            body = json.dumps({"headers": headers, "client": scope["client"]}).encode()
            await _respond(send, 200, body, b"application/json")
            return
        if path == "/stream":
            count = int(query.split("=")[1]) if query else 3
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for index in range(count):
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: %d\n\n" % index,
                        "more_body": True,
                    }
                )
                await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/stall":  # one event, then silence
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await asyncio.sleep(3)
            return
        if path == "/hop":  # hop-by-hop fields the router must not relay
            headers = [
                (b"keep-alive", b"timeout=99"),
                (b"x-end", b"kept"),
                (b"content-length", b"2"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if path == "/big":
            size = int(query.split("=")[1])
            await _respond(send, 200, b"x" * size, b"application/octet-stream")
            return
        if path == "/slow":
            await asyncio.sleep(float(query.split("=")[1]))
            await _respond(send, 200, b"late", b"text/plain")
            return
        if path == "/whoami":
            body = json.dumps({"app": name, "port": scope["client"][1]}).encode()
            await _respond(send, 200, body, b"application/json")
            return
        await _respond(send, 200, f"hello from {name}".encode(), b"text/plain")

    return app


async def _respond(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def app_server(name: str, unix_path: str | None = None) -> AsyncIterator[Upstream]:
    """A real uvicorn server for ``make_app(name)`` on a free port (or a Unix socket)."""
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(unix_path)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        make_app(name), log_level="warning", access_log=False, lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        if unix_path is not None:
            yield Upstream(unix_path=unix_path)
        else:
            yield Upstream(host="127.0.0.1", port=sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class BackendsTestDouble:
    """Test double of the runtime's `Backends` side: fixed upstreams, optional start delay.

    ``ensure_running`` sleeps ``start_delay`` the first time (a cold start) and then answers
    at once; ``fail`` makes it raise the given error.
    """

    upstreams: dict[str, Upstream]
    start_delay: float = 0.0
    fail: Exception | None = None
    started: set[str] = field(default_factory=set)
    ensure_calls: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    finished: int = 0

    async def ensure_running(self, deployment_id: str) -> Upstream:
        self.ensure_calls += 1
        if self.fail is not None:
            raise self.fail
        if deployment_id not in self.started:
            await asyncio.sleep(self.start_delay)
            self.started.add(deployment_id)
        return self.upstreams[deployment_id]

    def request_started(self, deployment_id: str) -> None:
        self.in_flight[deployment_id] = self.in_flight.get(deployment_id, 0) + 1

    def request_finished(self, deployment_id: str) -> None:
        self.in_flight[deployment_id] -= 1
        self.finished += 1


@dataclass
class LogSinkTestDouble:
    lines: list[RuntimeLogLine] = field(default_factory=list)

    def write(self, lines: list[RuntimeLogLine]) -> None:
        self.lines.extend(lines)


def snapshot(
    deployments: dict[str, DeploymentStatus] | None = None,
    domains: dict[str, str | None] | None = None,
) -> RoutingSnapshot:
    return RoutingSnapshot(
        base_domain=BASE,
        deployments={
            dep: DeploymentRoute(status=status, project="shop", environment="production")
            for dep, status in (deployments or {}).items()
        },
        domains=domains or {},
    )


@contextlib.asynccontextmanager
async def router(
    routes: RoutingSnapshot,
    backends: BackendsTestDouble,
    control_plane: Upstream,
    limits: RouterLimits | None = None,
    sink: LogSinkTestDouble | None = None,
) -> AsyncIterator[RouterServer]:
    server = await serve_router(
        host="127.0.0.1",
        port=0,
        snapshot=routes,
        backends=backends,
        control_plane=control_plane,
        log_sink=sink,
        limits=limits,
    )
    try:
        yield server
    finally:
        await server.close()


async def raw_request(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the router closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])
