"""Running the router: `serve_router` opens the public port and returns a `RouterServer`.

    server = await serve_router(
        host="0.0.0.0", port=8000, snapshot=snapshot, backends=runtime,
        control_plane=Upstream(unix_path="/run/phemeral/api.sock"), log_sink=sink,
    )
    server.update(new_snapshot)   # on every deploy, promote, rollback, domain change
    await server.close()

With ``https_port=`` (or ``https_sock=``) a second listener terminates TLS 1.2/1.3 with the
certificates handed to ``server.set_certificates([...])`` (picked by SNI, swapped for new
handshakes only) and proxies like the plain one, with ``X-Forwarded-Proto: https``. The plain
listener answers the ACME HTTP-01 tokens given to ``server.set_challenge(host, token, answer)``.

Run it on a uvloop event loop for full speed (it works on the default loop too).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable

from phemeral.models import RoutingSnapshot, RuntimeLogSink, TlsCertificate, Upstream
from phemeral.router.access_log import AccessLog
from phemeral.router.backends import Backends
from phemeral.router.proxy import ClientConnection, Router, RouterLimits

SWEEP_INTERVAL = 0.5
DRAIN_POLL = 0.01


class RouterServer:
    """A listening router; `update` swaps routes, `close` stops it."""

    def __init__(
        self,
        router: Router,
        server: asyncio.Server,
        access_log: AccessLog,
        https: asyncio.Server | None = None,
    ) -> None:
        self.router = router
        self._server = server
        self._https = https
        self._access_log = access_log
        self._sweeper = router.loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        """The plain-HTTP TCP port it listens on (useful when started with port 0)."""
        return _tcp_port(self._server)

    @property
    def https_port(self) -> int | None:
        """The HTTPS port, None without an HTTPS listener."""
        return None if self._https is None else _tcp_port(self._https)

    def update(self, snapshot: RoutingSnapshot) -> None:
        """Route by ``snapshot`` from the next request on; requests in flight are unaffected."""
        self.router.update(snapshot)

    def set_certificates(self, certificates: Iterable[TlsCertificate]) -> None:
        """Serve exactly these certificates from the next TLS handshake on."""
        self.router.certificates.replace(certificates)

    def set_challenge(self, host: str, token: str, key_authorization: str | None) -> None:
        """Answer (or stop answering, with None) an ACME HTTP-01 token for ``host``."""
        self.router.challenges.set(host, token, key_authorization)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.router.sweep()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, answer what comes on open connections with ``Connection: close``
        and wait (at most ``timeout`` s) for their clients to leave; `close` ends the rest.

        The listening sockets only close here: a process that took them over (an upgrade,
        `phemeral.dataplane.handover`) keeps accepting on them, no connection is refused.
        """
        router = self.router
        router.draining = True
        self._server.close()
        if self._https is not None:
            self._https.close()
        deadline = router.loop.time() + timeout
        while router.connections and router.loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)

    async def close(self) -> None:
        """Stop listening, close every connection and flush the access log."""
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        self._server.close()
        if self._https is not None:
            self._https.close()
        for conn in list(self.router.connections):
            if conn.transport is not None:
                conn.transport.close()
        self.router.pool.close()
        self.router.gate.close()
        await self._server.wait_closed()
        if self._https is not None:
            await self._https.wait_closed()
        self._access_log.flush()


def _tcp_port(server: asyncio.Server) -> int:
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    raise RuntimeError("the router is not listening on TCP")


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
    https_port: int | None = None,
    https_sock: socket.socket | None = None,
    certificates: Iterable[TlsCertificate] = (),
) -> RouterServer:
    """Listen on ``host:port`` (or an already bound ``sock``) and start routing; with
    ``https_port`` (or ``https_sock``) also on an HTTPS listener serving ``certificates``."""
    loop = asyncio.get_running_loop()
    access_log = AccessLog(log_sink, loop)
    limits = limits or RouterLimits()
    router = Router(loop, snapshot, backends, control_plane, access_log, limits)
    router.certificates.replace(certificates)
    if sock is not None:
        server = await loop.create_server(lambda: ClientConnection(router), sock=sock, backlog=1024)
    else:
        server = await loop.create_server(
            lambda: ClientConnection(router), host, port, reuse_address=True, backlog=1024
        )
    https = None
    if https_port is not None or https_sock is not None:
        ctx = router.certificates.context
        handshake = limits.tls_handshake_timeout
        try:
            if https_sock is not None:
                https = await loop.create_server(
                    lambda: ClientConnection(router, tls=True),
                    sock=https_sock,
                    ssl=ctx,
                    ssl_handshake_timeout=handshake,
                    ssl_shutdown_timeout=limits.tls_shutdown_timeout,
                    backlog=1024,
                )
            else:
                assert https_port is not None
                https = await loop.create_server(
                    lambda: ClientConnection(router, tls=True),
                    host,
                    https_port,
                    ssl=ctx,
                    ssl_handshake_timeout=handshake,
                    ssl_shutdown_timeout=limits.tls_shutdown_timeout,
                    reuse_address=True,
                    backlog=1024,
                )
        except BaseException:
            server.close()
            raise
        router.https_port = _tcp_port(https)
    return RouterServer(router, server, access_log, https)
