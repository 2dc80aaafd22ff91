"""The router's shared state: route table, upstream pool, wake gate, access log, open connections,
certificates (`phemeral.router.tls`) and pending ACME challenge answers.

`Router` is what every client connection (`phemeral.router.proxy.ClientConnection`) reads its
routes, limits and pools from; `RouterLimits` holds the router's timeouts and bounds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phemeral.router.backends import WakeGate
from phemeral.router.pool import UpstreamPool
from phemeral.router.table import RouteTable
from phemeral.router.tls import CertificateStore, ChallengeResponses

if TYPE_CHECKING:
    from phemeral.models import RoutingSnapshot, Upstream
    from phemeral.router.access_log import AccessLog
    from phemeral.router.backends import Backends
    from phemeral.router.proxy import ClientConnection


@dataclass(frozen=True)
class RouterLimits:
    """Timeouts (seconds) and bounds of the router."""

    header_timeout: float = 15.0  # a request head must arrive within this
    keepalive_timeout: float = 75.0  # idle client connections are closed after this
    connect_timeout: float = 5.0  # connecting to an app → 504
    first_byte_timeout: float = 60.0  # request sent, no response head → 504
    idle_timeout: float = 120.0  # a streaming exchange with no bytes either way is cut
    tunnel_idle_timeout: float = 3600.0  # WebSocket tunnels with no bytes either way
    wake_queue_limit: int = 256  # requests held per deployment while it starts
    wake_deadline: float = 30.0  # how long a held request waits for the start
    pool_max_idle: int = 128  # idle upstream connections kept per backend
    pool_idle_timeout: float = 4.0  # below uvicorn's 5 s keep-alive, to avoid reuse races
    tls_handshake_timeout: float = 15.0  # a TLS handshake must complete within this
    tls_shutdown_timeout: float = 5.0  # waiting for the client's close_notify after ours
    linger_timeout: float = 5.0  # closing while the client still sends: the most between its
    linger_time: float = 30.0  # bytes, and in all, that they are read and dropped (nginx's)


class Router:
    """Shared state of all connections: route table, pools, wake gate, access log."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        snapshot: RoutingSnapshot,
        backends: Backends,
        control_plane: Upstream,
        access_log: AccessLog,
        limits: RouterLimits,
    ) -> None:
        self.loop = loop
        self.table = RouteTable(snapshot)
        self.backends = backends
        self.control_plane = control_plane
        self.access_log = access_log
        self.limits = limits
        self.pool = UpstreamPool(
            loop, max_idle=limits.pool_max_idle, idle_timeout=limits.pool_idle_timeout
        )
        self.gate = WakeGate(
            backends, queue_limit=limits.wake_queue_limit, deadline=limits.wake_deadline
        )
        self.connections: set[ClientConnection] = set()
        self.certificates = CertificateStore()
        self.challenges = ChallengeResponses()
        self.https_port: int | None = None  # set when the HTTPS listener is open
        self.draining = False  # every answer from now on ends its connection (`drain`)

    def update(self, snapshot: RoutingSnapshot) -> None:
        """Swap the route table; requests already routed keep their upstream."""
        self.table = RouteTable(snapshot)

    def sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            if conn.deadline and now > conn.deadline:
                conn.on_deadline()
        self.pool.sweep(now)
