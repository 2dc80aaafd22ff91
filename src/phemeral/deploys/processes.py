"""Extra processes follow the current pointers: after every published change, the runtime is
handed the current deployment of each environment (with its release and variables) and runs
the extra processes of exactly those (`phemeral.runtime.processes`).

Changes arrive from any thread (a promote in a request handler, a build finishing); they are
coalesced into one sync at a time on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select

from phemeral.deploys.environments import deployment_runtime_env
from phemeral.deploys.plane import ControlPlane
from phemeral.models import DeploymentStatus, Release, RoutingSnapshot
from phemeral.store.releases import release_from_json
from phemeral.store.schema import Deployment, Environment

log = logging.getLogger("phemeral.deploys")


def current_releases(cp: ControlPlane) -> list[Release]:
    """The release of every environment's current deployment that declares extra processes."""
    with cp.store.read() as s:
        rows = s.execute(
            select(Deployment, Environment)
            .join(Environment, Environment.current_deployment_id == Deployment.id)
            .where(Deployment.status == DeploymentStatus.SUCCESSFUL)
        ).all()
        out = []
        for d, env in rows:
            if not d.release or not d.release.get("processes"):
                continue
            out.append(release_from_json(d.release, deployment_runtime_env(cp, s, d, env)))
        return out


class ProcessSync:
    """Keeps the runtime's extra processes on the current deployments (one sync at a time)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self._loop = asyncio.get_running_loop()
        self._wanted = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="process-sync")
        self.synced = 0  # completed syncs (tests wait on it)

    def poke(self, _snapshot: RoutingSnapshot | None = None) -> None:
        """A routing change (any thread): sync soon."""
        self._loop.call_soon_threadsafe(self._wanted.set)

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            runtime = self.cp.runtime
            try:
                releases = await asyncio.to_thread(current_releases, self.cp)
                if runtime is not None:
                    await runtime.run_processes(releases)
            except Exception:
                log.exception("syncing extra processes failed")
            self.synced += 1

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
