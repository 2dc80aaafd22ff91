"""Extra processes (``worker``, ``clock``, … of a Procfile or ``phemeral.toml``).

They run for the *current* deployment of each environment only, always on: requests never
wake them and idleness never stops them. `ExtraProcesses.run_for` is handed the releases that
are current now; it starts what is missing first, then drains and stops what is no longer
current, so a promote swaps them (new ones start, old ones get SIGTERM, then SIGKILL after the
stop timeout). Each process runs as ``sh -c COMMAND`` in its deployment's sandbox (the same
`Launcher` spec, uid and limits as the web process; a writable throwaway app directory of its
own when the host allows it), in a cgroup of its own, with ``$PORT`` set;
a crash is restarted on the web process's schedule (`backoff`); its output is the deployment's
runtime log with the process name as the instance. Records let a restarted platform replace
what an earlier run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from phemeral import network, sandbox
from phemeral.errors import PhemeralError
from phemeral.models import ProcessState, Release
from phemeral.runtime import procs
from phemeral.runtime.backoff import CrashHistory, record_crash, retry_after
from phemeral.runtime.deployment import Supervision
from phemeral.runtime.launch import free_port

log = logging.getLogger(__name__)
START_WAIT = 15.0  # seconds a swap waits for the new processes to launch before stopping the old


def record_key(deployment_id: str, name: str) -> str:
    """The runtime record (and cgroup suffix) of one extra process."""
    return f"{deployment_id}.p-{name}"


@dataclass
class ExtraProcess:
    release: Release
    name: str
    command: str
    state: str = "starting"
    process: asyncio.subprocess.Process | None = None
    cgroup: sandbox.Cgroup | None = None
    netns: network.Netns | None = None  # its own namespace, with the release's allow-list
    history: CrashHistory = field(default_factory=CrashHistory)
    last_exit: str | None = None
    started_at: datetime | None = None
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    logs: list[asyncio.Future[None]] = field(default_factory=list)

    def ended(self) -> bool:
        """Asked to stop (a method: it changes while the supervisor awaits)."""
        return self.stopping

    def view(self) -> ProcessState:
        return ProcessState(
            name=self.name,
            command=self.command,
            state=self.state,  # type: ignore[arg-type]
            restarts=self.history.total_restarts,
            last_exit=self.last_exit,
            started_at=self.started_at,
        )


class ExtraProcesses:
    """The always-on processes of every environment's current deployment."""

    def __init__(self, sup: Supervision) -> None:
        self.sup = sup
        self.running: dict[str, dict[str, ExtraProcess]] = {}  # deployment id → name → process
        self._lock = asyncio.Lock()

    def states(self, deployment_id: str) -> tuple[ProcessState, ...]:
        return tuple(p.view() for p in self.running.get(deployment_id, {}).values())

    async def run_for(self, releases: list[Release]) -> None:
        """Run the processes of exactly these releases: start new ones, then stop the rest."""
        async with self._lock:
            wanted = {r.deployment_id: r for r in releases if r.processes}
            started: list[ExtraProcess] = []
            for deployment_id, release in wanted.items():
                if deployment_id not in self.running:
                    self.running[deployment_id] = {
                        name: self._start(release, name, command)
                        for name, command in release.processes.items()
                    }
                    started += self.running[deployment_id].values()
            old = [d for d in self.running if d not in wanted]
            if old and started:
                # the new ones are up (launched, or already failing into backoff) before the
                # old ones are asked to stop; bounded so a slow sandbox cannot hold a swap
                deadline = time.monotonic() + START_WAIT
                while time.monotonic() < deadline and any(p.state == "starting" for p in started):
                    await asyncio.sleep(0.05)
            await asyncio.gather(*(self._stop_deployment(d) for d in old))

    async def close(self) -> None:
        async with self._lock:
            await asyncio.gather(*(self._stop_deployment(d) for d in list(self.running)))

    # -- one process --------------------------------------------------------------------------

    def _start(self, release: Release, name: str, command: str) -> ExtraProcess:
        proc = ExtraProcess(release, name, command)
        proc.task = asyncio.get_running_loop().create_task(
            self._supervise(proc), name=f"process-{release.deployment_id}-{name}"
        )
        return proc

    def _system(self, proc: ExtraProcess, message: str) -> None:
        did = proc.release.deployment_id
        log.info("%s: %s", did, message)
        self.sup.capture.emit(did, proc.name, "system", message, None, limited=False)

    async def _supervise(self, proc: ExtraProcess) -> None:
        while not proc.ended():
            wait = retry_after(proc.history, self.sup.clock())
            if wait > 0:
                proc.state = "backoff"
                await asyncio.sleep(wait)
                if proc.ended():
                    break
            proc.state = "starting"
            started = self.sup.clock()
            try:
                code = await self._run_once(proc)
            except (OSError, PhemeralError) as exc:
                code = None
                proc.last_exit = f"cannot start: {exc}"
            if proc.ended():
                break
            if code is not None:
                proc.last_exit = f"exited with code {code}"
            proc.history = record_crash(proc.history, self.sup.clock(), started)
            delay = retry_after(proc.history, self.sup.clock())
            self._system(
                proc,
                f"process {proc.name} ended ({proc.last_exit}); restart #{proc.history.crashes} "
                + ("now" if delay == 0 else f"in {delay:.0f} s"),
            )
        proc.state = "stopped"

    async def _run_once(self, proc: ExtraProcess) -> int:
        sup, release = self.sup, proc.release
        key = record_key(release.deployment_id, proc.name)
        if proc.cgroup is None:
            proc.cgroup = await sup.launcher.create_cgroup(key, f"process {key}")
        if proc.netns is None:
            proc.netns = await sup.launcher.create_network(release.allow, f"process {key}")
        env = sup.launcher.env(release, free_port())
        env["PHEMERAL_PROCESS"] = proc.name
        # a writable throwaway app directory of its own (a fresh one per start), keyed apart
        # from the deployment's web view so dropping that never touches this one
        view = sup.views.command(key, "run", release.workdir, release.uid)
        spec = sup.launcher.spec(release, env, view, netns=proc.netns)
        argv = sup.launcher.argv(["/bin/sh", "-c", proc.command], spec, proc.cgroup)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await sup.launcher.exec(argv, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            await self._forget_view(key)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        proc.process = process
        sup.records.write(key, process.pid, proc.cgroup)
        did = release.deployment_id
        proc.logs = [
            sup.capture.attach(out_r, did, proc.name, "stdout"),
            sup.capture.attach(err_r, did, proc.name, "stderr"),
        ]
        proc.state = "running"
        proc.started_at = datetime.now(UTC)
        self._system(proc, f"process {proc.name} started: {proc.command}")
        code = await process.wait()
        procs.kill_tree(process.pid)  # what the launcher left behind goes with it
        await sup.capture.drain(proc.logs, 1.0)
        sup.records.remove(key)
        await self._forget_view(key)
        return code

    async def _forget_view(self, key: str) -> None:
        views = self.sup.views
        gone = views.end_instance(key, "run")
        dropped = views.drop(key)
        await self.sup.forget_dirs([*gone, *([dropped] if dropped else [])])

    async def _stop_deployment(self, deployment_id: str) -> None:
        found = self.running.pop(deployment_id, {})
        await asyncio.gather(*(self._stop(p) for p in found.values()))

    async def _stop(self, proc: ExtraProcess) -> None:
        proc.stopping = True
        proc.state = "stopping"
        process = proc.process
        if process is not None and process.returncode is None:
            self._system(proc, f"stopping process {proc.name} (no longer current)")
            # the app's processes, deepest first; the sandbox's own init ignores TERM
            procs.signal_all(reversed(procs.descendants(process.pid)), signal.SIGTERM)
            deadline = time.monotonic() + self.sup.stop_timeout
            while process.returncode is None and time.monotonic() < deadline:
                tree = procs.descendants(process.pid)
                if not tree:
                    break
                await asyncio.sleep(0.05)
            if process.returncode is None:
                procs.kill_tree(process.pid)
        if proc.task is not None:
            proc.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await proc.task
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 5)
        if proc.cgroup is not None:
            await asyncio.to_thread(proc.cgroup.remove)
        netns, proc.netns = proc.netns, None
        await self.sup.launcher.remove_network(netns)
        key = record_key(proc.release.deployment_id, proc.name)
        self.sup.records.remove(key)
        await self._forget_view(key)
        proc.state = "stopped"
