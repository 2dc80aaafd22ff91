"""What the router needs from the runtime, and the wake queue in front of it.

`Backends` is declared here, by its consumer; `phemeral.runtime.supervisor.Runtime` satisfies
it. `WakeGate` holds requests for a deployment whose instance is starting: one shared
``ensure_running`` per deployment, at most ``queue_limit`` requests waiting on it, each for at
most ``deadline`` seconds; past either bound the request gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from phemeral.errors import Unavailable
from phemeral.models import Upstream


class Backends(Protocol):
    async def ensure_running(self, deployment_id: str) -> Upstream: ...

    def request_started(self, deployment_id: str) -> None: ...

    def request_finished(self, deployment_id: str) -> None: ...


class WakeBusy(Unavailable):
    """Too many requests are already waiting for this deployment to start."""


class WakeTimeout(Unavailable):
    """The deployment did not start within the wake deadline."""


class WakeGate:
    def __init__(self, backends: Backends, *, queue_limit: int, deadline: float) -> None:
        self._backends = backends
        self.queue_limit = queue_limit
        self.deadline = deadline
        self._starting: dict[str, asyncio.Future[Upstream]] = {}
        self._waiting: dict[str, int] = {}

    def waiting(self, deployment_id: str) -> int:
        return self._waiting.get(deployment_id, 0)

    async def upstream_for(self, deployment_id: str) -> Upstream:
        """The deployment's upstream, starting it if needed (shared by concurrent callers)."""
        waiting = self._waiting.get(deployment_id, 0)
        if waiting >= self.queue_limit:
            raise WakeBusy(f"{waiting} requests are already waiting for this app to start")
        future = self._starting.get(deployment_id)
        if future is None:
            future = asyncio.ensure_future(self._backends.ensure_running(deployment_id))
            self._starting[deployment_id] = future
            future.add_done_callback(lambda f: self._forget(deployment_id, f))
        self._waiting[deployment_id] = waiting + 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline)
        except TimeoutError as exc:
            raise WakeTimeout(f"the app did not start within {self.deadline:g} s") from exc
        finally:
            left = self._waiting[deployment_id] - 1
            if left:
                self._waiting[deployment_id] = left
            else:
                del self._waiting[deployment_id]

    def _forget(self, deployment_id: str, future: asyncio.Future[Upstream]) -> None:
        if self._starting.get(deployment_id) is future:
            del self._starting[deployment_id]
        if not future.cancelled():
            future.exception()  # retrieved here so an unawaited failure is not logged as lost

    def close(self) -> None:
        for future in list(self._starting.values()):
            future.cancel()
