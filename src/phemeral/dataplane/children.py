"""The processes `phemeral serve` starts beside its data plane, and their restarts.

A `Child` runs one command (the control plane, or a router worker), restarts it whenever it
exits (immediately, then with a growing delay while it keeps failing fast: `restart_delay`),
and dies with its parent: ``PR_SET_PDEATHSIG`` sends it SIGKILL if the data plane is killed,
so a restarted platform never finds an old control plane still building.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
HEALTHY_AFTER = 10.0  # a child that ran this long starts the delay schedule again
MAX_DELAY = 5.0


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before a restart, after ``quick_exits`` exits in a row that came early."""
    if quick_exits <= 1:
        return 0.0
    return float(min(MAX_DELAY, 0.25 * 2.0 ** (quick_exits - 2)))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running())

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, preexec_fn=_die_with_parent
        )

    async def _keep_running(self) -> None:
        quick = 0  # `stop` cancels this task before it signals the process: no restart race
        while True:
            started = time.monotonic()
            try:
                self.process = await self._spawn()
            except OSError:
                log.exception("could not start the %s", self.name)
                self.process = None
                code: int | None = None
            else:
                self.starts += 1
                code = await self.process.wait()
            quick = quick + 1 if time.monotonic() - started < HEALTHY_AFTER else 1
            delay = restart_delay(quick)
            log.warning(
                "the %s exited (%s); restarting%s",
                self.name,
                code,
                f" in {delay:g} s" if delay else "",
            )
            await asyncio.sleep(delay)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; no restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
