"""Running the router: `serve_router` opens the public port and returns a `RouterServer`.

    server = await serve_router(
        host="0.0.0.0", port=8000, snapshot=snapshot, backends=runtime,
        control_plane=Upstream(unix_path="/run/phemeral/api.sock"), log_sink=sink,
    )
    server.update(new_snapshot)   # on every deploy, promote, rollback, domain change
    await server.close()

Run it on a uvloop event loop for full speed (it works on the default loop too).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from phemeral.models import RoutingSnapshot, RuntimeLogSink, Upstream
from phemeral.router.access_log import AccessLog
from phemeral.router.backends import Backends
from phemeral.router.proxy import ClientConnection, Router, RouterLimits

SWEEP_INTERVAL = 0.5


class RouterServer:
    """A listening router; `update` swaps routes, `close` stops it."""

    def __init__(self, router: Router, server: asyncio.Server, access_log: AccessLog) -> None:
        self.router = router
        self._server = server
        self._access_log = access_log
        self._sweeper = router.loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        """The TCP port it listens on (useful when started with port 0)."""
        for sock in self._server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("the router is not listening on TCP")

    def update(self, snapshot: RoutingSnapshot) -> None:
        """Route by ``snapshot`` from the next request on; requests in flight are unaffected."""
        self.router.update(snapshot)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.router.sweep()

    async def close(self) -> None:
        """Stop listening, close every connection and flush the access log."""
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        self._server.close()
        for conn in list(self.router.connections):
            if conn.transport is not None:
                conn.transport.close()
        self.router.pool.close()
        self.router.gate.close()
        await self._server.wait_closed()
        self._access_log.flush()


async def serve_router(
    *,
    host: str,
    port: int,
    snapshot: RoutingSnapshot,
    backends: Backends,
    control_plane: Upstream,
    log_sink: RuntimeLogSink | None,
    limits: RouterLimits | None = None,
    sock: socket.socket | None = None,
) -> RouterServer:
    """Listen on ``host:port`` (or an already bound ``sock``) and start routing."""
    loop = asyncio.get_running_loop()
    access_log = AccessLog(log_sink, loop)
    router = Router(loop, snapshot, backends, control_plane, access_log, limits or RouterLimits())
    if sock is not None:
        server = await loop.create_server(lambda: ClientConnection(router), sock=sock, backlog=1024)
    else:
        server = await loop.create_server(
            lambda: ClientConnection(router), host, port, reuse_address=True, backlog=1024
        )
    return RouterServer(router, server, access_log)
