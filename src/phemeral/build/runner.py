"""Run one build command inside the build's sandbox, streaming its output into the build log.

A `BuildContext` carries what every sandboxed step of one build shares: the log, the app uid,
the wall-clock deadline, the cgroup holding every process the build starts, and the binds that
the interpreter and tools need. `run` enforces the deadline (raising `BuildTimeout` after
killing the whole tree) and caps how much output reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phemeral import network, sandbox
from phemeral.errors import BuildTimeout
from phemeral.models import BuildLog
from phemeral.sandbox import Cgroup, SandboxSpec

if TYPE_CHECKING:
    from phemeral.build.workspace import Workspace

LOG_CAP_BYTES = 10 * 1024 * 1024  # per build (B8): a build printing gigabytes is cut short
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class StepResult:
    returncode: int
    output: list[str]  # the last lines, for error messages

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output[-n:])


@dataclass
class BuildContext:
    log: BuildLog
    uid: int | None
    deadline: float  # time.monotonic() value
    timeout: float  # the configured limit, for messages
    use_bwrap: bool
    memory_mb: int | None = None
    cgroup: Cgroup | None = None
    workspace: Workspace | None = None  # the build's disk quota (a loop-mounted file system)
    networks: network.Networks | None = None  # None: network steps share the host's
    netns: network.Netns | None = None  # the build's own, made by the first network step
    ro_binds: list[Path] = field(default_factory=list)
    rw_binds: list[Path] = field(default_factory=list)
    base_env: dict[str, str] = field(default_factory=dict)
    log_cap: int = LOG_CAP_BYTES
    logged_bytes: int = 0
    truncated: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self, stage: str) -> None:
        if self.remaining() <= 0:
            raise BuildTimeout(
                f"the build ran past its {self.timeout:.0f} s limit and was stopped", stage=stage
            )

    def emit(self, stage: str, line: str) -> None:
        """Write a command's output line, honouring the per-build log cap."""
        if self.truncated:
            return
        self.logged_bytes += len(line) + 1
        if self.logged_bytes > self.log_cap:
            self.truncated = True
            self.log.write(
                stage,
                f"… build output truncated (over {self.log_cap // 1024} KiB); the build goes on",
            )
            return
        self.log.write(stage, line)

    def spec(
        self,
        *,
        chdir: Path,
        env: Mapping[str, str],
        share_net: bool,
        ro: Sequence[Path] = (),
        rw: Sequence[Path] = (),
    ) -> SandboxSpec:
        merged = {"PATH": BASE_PATH, **self.base_env, **env}
        netns = self.netns.path if share_net and self.netns is not None else None
        return SandboxSpec(
            uid=self.uid,
            ro_binds=tuple(dict.fromkeys([*self.ro_binds, *ro])),
            rw_binds=tuple(dict.fromkeys([*self.rw_binds, *rw])),
            chdir=chdir,
            env=merged,
            share_net=share_net and netns is None,
            netns=netns,
            die_with_parent=True,
            memory_mb=self.memory_mb,
            pids_max=1024,
            nofile=8192,
            fsize_mb=4096,
            tmpfs_mb=1024,
        )


async def run(
    ctx: BuildContext,
    stage: str,
    argv: Sequence[str],
    *,
    chdir: Path,
    env: Mapping[str, str] | None = None,
    share_net: bool = False,
    ro: Sequence[Path] = (),
    rw: Sequence[Path] = (),
    quiet: bool = False,
) -> StepResult:
    """Run ``argv`` sandboxed as the build's uid; stream its output to the log unless ``quiet``."""
    ctx.check_deadline(stage)
    if share_net and ctx.networks is not None and ctx.netns is None:
        ctx.netns = await asyncio.to_thread(ctx.networks.create)
    spec = ctx.spec(chdir=chdir, env=env or {}, share_net=share_net, ro=ro, rw=rw)
    wrapped = sandbox.wrap(argv, spec, use_bwrap=ctx.use_bwrap)
    if ctx.cgroup is not None:
        wrapped = ctx.cgroup.join_argv() + wrapped
    proc = await asyncio.create_subprocess_exec(
        *wrapped,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    tail: list[str] = []

    async def pump() -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            if len(tail) > 200:
                del tail[:100]
            if not quiet:
                ctx.emit(stage, line)

    tasks = {asyncio.ensure_future(pump()), asyncio.ensure_future(proc.wait())}
    try:
        _, pending = await asyncio.wait(tasks, timeout=max(ctx.remaining(), 0.01))
    except asyncio.CancelledError:
        _kill_tree(ctx, proc.pid)
        for task in tasks:
            task.cancel()
        raise
    if pending:
        _kill_tree(ctx, proc.pid)
        _, still = await asyncio.wait(pending, timeout=10)
        for task in still:
            task.cancel()
        raise BuildTimeout(
            f"the build ran past its {ctx.timeout:.0f} s limit and was stopped", stage=stage
        )
    assert proc.returncode is not None
    return StepResult(returncode=proc.returncode, output=tail)


def _kill_tree(ctx: BuildContext, pid: int) -> None:
    """Kill everything the step started: its cgroup when there is one, its session otherwise."""
    if ctx.cgroup is not None:
        ctx.cgroup.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
