"""Extra processes in the real runtime: always on, crash backoff, tagged logs, swapped by
`run_processes`; the release phase's exit codes and timeout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from phemeral.errors import ReleaseFailed
from phemeral.models import ProcessState
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import ListBuildLog, ListSink, make_release
from .harness import run_with_runtime, wait_until


def test_processes_restart_after_a_crash_and_swap(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    base = make_release(tmp_path, "procs-a", "flask")
    a = replace(
        base,
        processes={
            "worker": "echo worker up as $PHEMERAL_PROCESS; exec sleep 600",
            "flaky": "echo flaky starting; exit 3",
        },
    )
    b = replace(make_release(tmp_path, "procs-b", "flask"), processes={"worker": "sleep 600"})

    async def body(runtime: Runtime) -> None:
        runtime.register(a)
        runtime.register(b)
        await runtime.run_processes([a])

        def states(did: str) -> dict[str, ProcessState]:
            return {p.name: p for p in runtime.instances(did).processes}

        await wait_until(lambda: states("procs-a")["worker"].state == "running")
        # the flaky one ends at once: restarted immediately once, then waits (backoff)
        await wait_until(lambda: states("procs-a")["flaky"].restarts >= 2)
        flaky = states("procs-a")["flaky"]
        assert flaky.state == "backoff" and flaky.last_exit == "exited with code 3"
        runtime.capture.flush()
        assert "worker up as worker" in sink.messages("procs-a")
        lines = [line for line in sink.lines if line.deployment_id == "procs-a"]
        assert {line.instance for line in lines if line.message == "flaky starting"} == {"flaky"}
        # not scaled to zero: an idle sweep leaves it running
        await runtime.sweep()
        assert states("procs-a")["worker"].state == "running"

        # swap: b's start, a's stop
        await runtime.run_processes([b])
        assert states("procs-b")["worker"].state == "running"
        assert runtime.instances("procs-a").processes == ()
        # nothing of a's left running
        await wait_until(lambda: not any("worker up as" in c for c in _cmdlines()), 10)

    run_with_runtime(settings, sink, body)


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("echo nope; exit 4", "exited with code 4"),
        ("sleep 30", "ran past its 1 s limit"),
    ],
)
def test_release_phase_failures(
    tmp_path: Path, settings: Settings, sink: ListSink, command: str, reason: str
) -> None:
    release = replace(
        make_release(tmp_path, "rel-x", "flask"), release_command=command, release_timeout=1.0
    )
    log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        with pytest.raises(ReleaseFailed, match=reason):
            await runtime.run_release(release, log)

    run_with_runtime(settings, sink, body)
    assert ("release", f"running the release command (from the repository): {command}") in (
        log.lines
    )
