"""The build queue: fair between projects, bounded overall.

- at most one build of a project runs at a time; its other builds wait in arrival order;
- at most ``settings.build_concurrency`` builds run at once, of different projects;
- a free slot goes to the oldest waiting build whose project has nothing running, so a project's
  queued builds never hold a slot another project could use (`pick`, pure).

A build that hangs holds one slot, and only until its timeout (`lifecycle.build_timeout`);
every build runs under its own CPU, memory, process and disk limits (see `build.pipeline`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from phemeral.deploys.lifecycle import run_build
from phemeral.deploys.plane import ControlPlane
from phemeral.models import DeploymentStatus
from phemeral.store.schema import Deployment, Project


@dataclass(frozen=True)
class Waiting:
    deployment_id: str
    project: str


def pick(waiting: Sequence[Waiting], running: Collection[str], free: int) -> list[Waiting]:
    """Which waiting builds start now (pure): oldest first, one per project, none of a project
    that already has a build running, at most ``free``."""
    chosen: list[Waiting] = []
    busy = set(running)
    for item in waiting:
        if len(chosen) >= free:
            break
        if item.project in busy:
            continue
        chosen.append(item)
        busy.add(item.project)
    return chosen


class BuildQueue:
    """Runs builds as `pick` says; thread-safe `submit` (request handlers run in threads)."""

    def __init__(
        self,
        cp: ControlPlane,
        run: Callable[[ControlPlane, str], Awaitable[DeploymentStatus]] | None = None,
    ) -> None:
        self._cp = cp
        self._run_build = run or run_build
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending = 0  # submitted from another thread, not queued yet
        self._waiting: list[Waiting] = []
        self._running: dict[str, str] = {}  # project → deployment id
        self._tasks: set[asyncio.Task[DeploymentStatus]] = set()
        self._lookups: set[asyncio.Task[None]] = set()

    def submit(self, deployment_id: str, project: str | None = None) -> None:
        """Queue a deployment's build (its project is looked up when not given)."""
        with self._lock:
            self._pending += 1
        self._loop.call_soon_threadsafe(self._arrive, deployment_id, project)

    def _arrive(self, deployment_id: str, project: str | None) -> None:
        if project is not None:
            self._enqueue(deployment_id, project)
            return
        task = self._loop.create_task(self._lookup(deployment_id))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _lookup(self, deployment_id: str) -> None:
        project = await asyncio.to_thread(self._project_of, deployment_id)
        self._enqueue(deployment_id, project or f"?{deployment_id}")

    def _project_of(self, deployment_id: str) -> str | None:
        with self._cp.store.read() as s:
            d = s.get(Deployment, deployment_id)
            if d is None or d.status != DeploymentStatus.BUILDING:
                return None
            return s.get_one(Project, d.project_id).name

    def _enqueue(self, deployment_id: str, project: str) -> None:
        with self._lock:
            self._pending -= 1
        self._waiting.append(Waiting(deployment_id, project))
        self._schedule()

    def _schedule(self) -> None:
        free = self._cp.settings.build_concurrency - len(self._running)
        for item in pick(self._waiting, self._running, free):
            self._waiting.remove(item)
            self._running[item.project] = item.deployment_id
            task = self._loop.create_task(self._run(item), name=f"build-{item.deployment_id}")
            self._tasks.add(task)

    async def _run(self, item: Waiting) -> DeploymentStatus:
        try:
            return await self._run_build(self._cp, item.deployment_id)
        finally:
            self._running.pop(item.project, None)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._schedule()

    def running(self) -> dict[str, str]:
        """Project → the deployment it is building now."""
        return dict(self._running)

    def waiting(self) -> list[Waiting]:
        return list(self._waiting)

    async def wait_idle(self) -> None:
        """Until every submitted build has finished (tests, orderly shutdown)."""
        while self._tasks or self._pending or self._waiting or self._lookups:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._waiting.clear()
        for task in [*self._tasks, *self._lookups]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._lookups, return_exceptions=True)
