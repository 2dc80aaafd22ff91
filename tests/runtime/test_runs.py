"""Runs: what earlier platform processes left is replaced after start; a live one, once it exits."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from phemeral.runtime import procs, runs
from phemeral.runtime.records import Records
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import ListSink

pytestmark = pytest.mark.slow


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"])


def run_of(proc: subprocess.Popen[bytes]) -> str:
    return f"{proc.pid}-{procs.start_time(proc.pid)}"


def test_earlier_runs_are_replaced_in_the_background_a_live_one_once_it_exits(
    settings: Settings, sink: ListSink
) -> None:
    state = settings.data_dir / "runtime"
    dead_run = "999999999-1"  # its platform process is gone (kill -9)
    owner = sleeper()  # stands for a platform process that still serves (an upgrade)
    live_run = run_of(owner)
    leftovers = {name: sleeper() for name in ("dead", "live", "legacy")}
    for name, run in (("dead", dead_run), ("live", live_run)):
        records = Records(runs.runs_dir(state) / run)
        records.dir.mkdir(parents=True)
        records.write(f"dep-{name}", leftovers[name].pid, None)
    legacy = Records(state)  # the layout before runs
    legacy.dir.mkdir(parents=True)
    legacy.write("dep-legacy", leftovers["legacy"].pid, None)

    async def main() -> None:
        runtime = Runtime(settings, sink)
        await runtime.start()
        try:
            await wait_until(lambda: leftovers["dead"].poll() is not None)
            await wait_until(lambda: leftovers["legacy"].poll() is not None)
            await wait_until(lambda: not (runs.runs_dir(state) / dead_run).exists())
            assert not legacy.dir.exists()
            # The live run's processes are its own until it exits.
            assert leftovers["live"].poll() is None
            assert (runs.runs_dir(state) / live_run).is_dir()
            owner.kill()
            owner.wait()
            await runtime.replaced()
            assert leftovers["live"].wait(timeout=20) == -9
            assert runs.others(state, runtime.run) == []
        finally:
            await runtime.close()
        assert not runtime.run_dir.exists()

    try:
        asyncio.run(main())
    finally:
        for proc in (owner, *leftovers.values()):
            proc.kill()
            proc.wait()


def test_a_run_is_alive_while_its_process_runs_and_not_as_a_zombie(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "300"])
    run = run_of(proc)
    assert runs.alive(run)
    assert not runs.alive(f"{proc.pid}-1")  # same pid, another start time: pid reuse
    proc.kill()
    deadline = time.monotonic() + 20
    while procs.stat_fields(proc.pid) and procs.stat_fields(proc.pid)[0] != "Z":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not runs.alive(run)  # exited, not yet reaped
    proc.wait()
    assert not runs.alive(run)
    assert not runs.alive("garbage")
