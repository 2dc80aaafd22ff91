"""A wake's trace and the event loop's stall watch."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from phemeral.runtime.loopwatch import LoopWatch, overlap_ms
from phemeral.runtime.waketrace import WakeTrace, describe


def test_a_trace_gives_each_phase_the_time_since_the_last_mark() -> None:
    trace = WakeTrace("paged", started=10.0)
    trace.mark("read_back", now=10.4)
    trace.mark("template", now=10.4005)
    trace.mark("fork", now=10.45)
    trace.note("forked", 30.0)
    trace.mark("answer", now=10.5)
    assert trace.total_ms == pytest.approx(500.0)
    figures = trace.figures()
    assert figures == {
        "read_back": 400.0,
        "template": 0.5,
        "fork": 49.5,
        "forked": 30.0,
        "answer": 50.0,
    }
    trace.stalled_ms = 120.0
    line = describe(trace)
    assert line.startswith("paged wake 500 ms: read_back 400.0, template 0.5, fork 49.5")
    assert line.endswith("the event loop stalled 120 ms meanwhile")
    assert trace.figures()["loop_stalled"] == 120.0


def test_marks_of_one_name_add_up() -> None:
    trace = WakeTrace("deep", started=0.0)
    trace.mark("answer", now=0.01)
    trace.mark("answer", now=0.03)
    assert trace.figures() == {"answer": 30.0}
    assert describe(WakeTrace("template")) == "template wake 0 ms: no phase marked"


def test_stall_overlap_counts_only_what_falls_in_the_window() -> None:
    stalls = [(1.0, 1.2), (2.0, 3.0), (5.0, 5.1)]
    assert overlap_ms(stalls, 0.0, 10.0) == pytest.approx(1300.0)
    assert overlap_ms(stalls, 1.1, 2.5) == pytest.approx(600.0)
    assert overlap_ms(stalls, 3.5, 4.5) == 0.0


def test_the_watch_sees_a_call_that_blocks_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[float, float]:
        watch = LoopWatch(interval=0.01)
        watch.start()
        await asyncio.sleep(0.1)
        quiet = watch.stalled_ms(time.perf_counter() - 0.1, time.perf_counter())
        began = time.perf_counter()
        a_blocking_call()
        await asyncio.sleep(0.05)
        blocked = watch.stalled_ms(began, time.perf_counter())
        await watch.close()
        return quiet, blocked

    with caplog.at_level(logging.WARNING, logger="phemeral.runtime.loopwatch"):
        quiet, blocked = asyncio.run(main())
    assert blocked >= 300
    assert quiet < 100  # a quiet loop: a late timer now and then at most (a shared box)
    assert any("the event loop stalled for" in r.getMessage() for r in caplog.records)
    # The watchdog saw where: the blocking call and its caller.
    held = [r.getMessage() for r in caplog.records if "has been held" in r.getMessage()]
    assert held and "a_blocking_call" in held[0] and "in main" in held[0], held


def a_blocking_call() -> None:
    time.sleep(0.4)
