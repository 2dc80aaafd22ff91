"""Keep-alive connections to upstreams, pooled per backend key (never shared across deployments).

The key is the deployment id (or the control plane's own key): a connection opened to one
deployment's instance is only ever reused for that deployment.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from phemeral.models import Upstream

if TYPE_CHECKING:
    from phemeral.router.upstream import UpstreamConnection


class UpstreamPool:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, max_idle: int, idle_timeout: float
    ) -> None:
        self._loop = loop
        self.time = loop.time
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self.opened = 0  # connections opened since start (for tests and benchmarks)

    def take(self, key: str) -> UpstreamConnection | None:
        """The most recently used idle connection for ``key``, if any."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, key: str, conn: UpstreamConnection) -> None:
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self.time()
        idle.append(conn)

    def discard(self, key: str, conn: UpstreamConnection) -> None:
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[key]

    def idle_count(self, key: str) -> int:
        return len(self._idle.get(key, ()))

    async def connect(
        self, key: str, upstream: Upstream, factory: type[UpstreamConnection]
    ) -> UpstreamConnection:
        loop = self._loop
        if upstream.unix_path is not None:
            _, conn = await loop.create_unix_connection(
                lambda: factory(self, key), upstream.unix_path
            )
        else:
            _, conn = await loop.create_connection(
                lambda: factory(self, key), upstream.host, upstream.port
            )
        self.opened += 1
        return conn

    def sweep(self, now: float) -> None:
        """Close connections idle longer than ``idle_timeout`` (oldest are first in each list)."""
        limit = now - self.idle_timeout
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and idle[0].idle_since < limit:
                idle.pop(0).close()
            if not idle:
                del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
