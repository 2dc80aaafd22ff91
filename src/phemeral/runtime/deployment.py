"""What the runtime knows of each deployment and instance set, and what its parts act through.

`DeploymentRuntime` is one registered release's state (its tier, instance, template, crash history);
`Instance` is one running set of server processes; `Supervision` is shared by every part of the
runtime: settings, clock, log capture (with the boot check's tee), launcher, records and the
background tasks it must keep alive.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from phemeral import network, sandbox
from phemeral.models import Release, Upstream
from phemeral.runtime.appview import AppViews
from phemeral.runtime.backoff import CrashHistory
from phemeral.runtime.capture import LogCapture
from phemeral.runtime.command import ServerCommand
from phemeral.runtime.launch import Launcher, oom_kills
from phemeral.runtime.records import Records
from phemeral.runtime.template import TemplateProcess
from phemeral.runtime.waketrace import WakeTrace
from phemeral.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Instance:
    """One running instance set: the server process(es) of a deployment."""

    id: str
    upstream: Upstream
    started_at: float
    pids: list[int] = field(default_factory=list)  # template children (template's pid view)
    process: asyncio.subprocess.Process | None = None  # custom command launcher
    logs: list[asyncio.Future[None]] = field(default_factory=list)
    exited: asyncio.Future[str] | None = None  # resolves with the exit reason
    stopping: bool = False
    template: TemplateProcess | None = None  # the template that forked ``pids``
    respawns: list[float] = field(default_factory=list)  # when workers were replaced


@dataclass
class DeploymentRuntime:
    release: Release
    idle_timeout: float
    server: ServerCommand | None
    state: str = "stopped"
    instance: Instance | None = None
    template: TemplateProcess | None = None
    template_logs: list[asyncio.Future[None]] = field(default_factory=list)
    dormant_since: float | None = None
    waking: asyncio.Future[Upstream] | None = None
    stopping: asyncio.Task[None] | None = None
    in_flight: int = 0
    last_request_at: float = 0.0
    history: CrashHistory = field(default_factory=CrashHistory)
    last_exit: str | None = None
    last_wake_at: datetime | None = None
    last_wake_ms: float | None = None
    wake_trace: WakeTrace | None = None  # the wake under way, or the last one
    last_wake_phases: dict[str, float] | None = None  # the last wake's, to its first answer
    cgroup: sandbox.Cgroup | None = None
    netns: network.Netns | None = None  # its own network namespace (same life as the cgroup)
    oom_kills: int = 0
    restart_task: asyncio.Task[None] | None = None
    shared_key: str | None = None  # the shared framework template it was forked from
    template_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # load vs drop
    needs_refresh: bool = False  # its template predates the shared template's learned preload
    # The paged tier (`paging`): the template whose memory was paged out, and when (runtime
    # clock). A template of its own loaded since is not paged out.
    paged_template: TemplateProcess | None = None
    paged_at: float = 0.0
    # Pages written to swap stay in memory (the swap cache) until reclaimed: its cgroup is
    # asked to, once the writes are done (``time.monotonic()`` of the page-out; None: done).
    paged_reclaim_due: float | None = None
    # The hot set: the pages the paged template and its fork touched for a wake
    # (`paging.present_ranges`), read back into that template (``hot_pid``, host pid) after
    # each page-out so the next fork starts with them, within the hot-set budget; only for
    # ``hot_template``. ``hot_kb``: its anonymous pages (what keeping it costs).
    hot_set: list[tuple[int, int]] = field(default_factory=list)
    hot_template: TemplateProcess | None = None
    hot_pid: int | None = None
    hot_kb: int = 0
    hot_in: bool = False  # read back into the template since its last page-out
    # A resident template whose anonymous pages were written out once while dormant (kept in
    # the swap cache, so its next fork faults them back cheaply): what that fork and
    # the template touch is then its hot set, reads included (`PagedTier.start_learning`).
    hot_learning: TemplateProcess | None = None
    # how its hot set was learned: "written" (a resident template's written and file pages,
    # reads missing), "learning" or "paged" (all it touched)
    hot_how: str = ""
    learned_from: TemplateProcess | None = None  # the template a learning wake ran for, once
    # A rehearsal (`rehearsal`): under way (its wake is not a use), and the template it ran
    # for (once per template).
    rehearsing: bool = False
    rehearsed: TemplateProcess | None = None
    # what of it is locked in the template's memory (``mlock``: neither the kernel's reclaim
    # nor a host's proactive pageout takes it), to unlock before the next page-out
    hot_locked: list[tuple[int, int]] = field(default_factory=list)
    draining: list[Instance] = field(default_factory=list)  # stopping, finishing requests
    # Each server imports the app after the fork (what the app's import opens must not be
    # shared); ``app_modules`` are what its import pulled in, for the template to preload.
    import_per_server: bool = False
    app_modules: list[str] = field(default_factory=list)
    # What its servers imported after their fork (the template imports it too: `zygote`'s
    # learned imports); a later template of it imports these once the app is loaded.
    learned_imports: list[str] = field(default_factory=list)

    @property
    def paged(self) -> bool:
        """Its dormant template's memory is paged out (`paging`)."""
        template = self.template
        return template is not None and template.alive and template is self.paged_template


class Supervision:
    """The settings, clock, log capture, launcher and records every part of the runtime uses."""

    def __init__(
        self,
        settings: Settings,
        capture: LogCapture,
        launcher: Launcher,
        records: Records,
        clock: Callable[[], float],
        stop_timeout: float,
        views: AppViews,
    ) -> None:
        self.views = views
        self.settings = settings
        self.capture = capture
        self.launcher = launcher
        self.records = records
        self.clock = clock
        self.stop_timeout = stop_timeout
        self.deployments: dict[str, DeploymentRuntime] = {}
        self.boot_tees: dict[str, Callable[[str, str], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def tee(self, dep: DeploymentRuntime) -> Callable[[str, str], None] | None:
        return self.boot_tees.get(dep.release.deployment_id)

    def system(self, dep: DeploymentRuntime, message: str) -> None:
        log.info("%s: %s", dep.release.deployment_id, message)
        self.capture.emit(
            dep.release.deployment_id, "-", "system", message, self.tee(dep), limited=False
        )

    def attach_output(
        self, dep: DeploymentRuntime, instance: str, out_r: int, err_r: int, *, tee: bool = True
    ) -> list[asyncio.Future[None]]:
        """Capture a process's stdout and stderr pipes as the lines of ``instance``."""
        did = dep.release.deployment_id
        to = self.tee(dep) if tee else None
        return [
            self.capture.attach(out_r, did, instance, "stdout", to),
            self.capture.attach(err_r, did, instance, "stderr", to),
        ]

    async def forget_dirs(self, dirs: list[Path]) -> None:
        """Delete throwaway layer directories (off the event loop)."""
        for directory in dirs:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def ensure_network(self, dep: DeploymentRuntime) -> None:
        """Give the deployment its network namespace unless it has one or the host cannot (a
        template forked from a shared one lives in that one's: it needs none of its own)."""
        if dep.netns is None:
            did = dep.release.deployment_id
            dep.netns = await self.launcher.create_network(dep.release.allow, did)

    async def ensure_cgroup(self, dep: DeploymentRuntime) -> None:
        """Give the deployment its cgroup (limits, OOM count) unless it has one or cannot."""
        did = dep.release.deployment_id
        if dep.cgroup is not None:
            return
        cgroup = await self.launcher.create_cgroup(did, did)
        if cgroup is not None:
            dep.cgroup = cgroup
            dep.oom_kills = oom_kills(cgroup)

    async def remove_network(self, dep: DeploymentRuntime) -> None:
        """Remove the deployment's namespace (nothing of it may run any more)."""
        netns, dep.netns = dep.netns, None
        await self.launcher.remove_network(netns)


def is_dormant(dep: DeploymentRuntime) -> bool:
    """Scaled to zero with its template resident (and not waking)."""
    template = dep.template
    return (
        template is not None
        and template.alive
        and dep.instance is None
        and dep.waking is None
        and dep.dormant_since is not None
    )
