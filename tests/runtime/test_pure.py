"""The pure decisions of the runtime: lines, floods, backoff, idleness, command parsing."""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phemeral.runtime import paging, procs
from phemeral.runtime.backoff import CrashHistory, may_start, record_crash, restart_delay
from phemeral.runtime.command import parse_server_command
from phemeral.runtime.footprint import IdleCost, Kept, measure
from phemeral.runtime.idle import (
    DEFAULT_WAKE_MS,
    WAKE_SAMPLES,
    DormantTemplate,
    Evictions,
    HotSet,
    PageCandidate,
    Rehearsal,
    WarmCandidate,
    expected_wake_ms,
    hot_sets_to_keep,
    is_idle,
    rehearsals_due,
    sweep_interval,
    templates_to_evict,
    templates_to_page_out,
    templates_to_warm,
)
from phemeral.runtime.ledger import warm_group
from phemeral.runtime.loglines import LineSplitter, RateLimiter, dropped_marker, split_long
from phemeral.runtime.paging import swap_file_size_mb
from phemeral.runtime.usage import Usage


def test_lines_are_split_on_newlines_and_partial_lines_wait() -> None:
    splitter = LineSplitter(limit=16)
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree\n") == ["two", "three"]
    assert splitter.flush() == []
    assert splitter.feed(b"tail") == []
    assert splitter.flush() == ["tail"]


def test_long_lines_are_cut_at_the_bound() -> None:
    splitter = LineSplitter(limit=10)
    assert splitter.feed(b"a" * 25 + b"\n") == ["a" * 10, "a" * 10, "a" * 5]
    # An unterminated flood is cut too, so memory stays bounded.
    assert splitter.feed(b"b" * 23) == ["b" * 10, "b" * 10]
    assert splitter.flush() == ["bbb"]


def test_cuts_never_split_a_utf8_character() -> None:
    text = "é" * 10  # 2 bytes each
    pieces = split_long(text.encode(), limit=5)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 5 for p in pieces)
    assert all("\ufffd" not in p for p in pieces)


def test_rate_limiter_admits_a_burst_then_the_rate_and_counts_drops() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    admitted = [limiter.admit(now=100.0) for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    assert limiter.take_dropped() == 3
    assert limiter.take_dropped() == 0
    assert limiter.admit(now=100.15)  # 0.15 s at 10/s refills one token
    assert not limiter.admit(now=100.15)
    assert limiter.admit(now=101.0)
    assert dropped_marker(3) == "[phemeral] 3 lines dropped (log rate limit)"
    assert dropped_marker(1).startswith("[phemeral] 1 line dropped")


def test_backoff_is_immediate_then_doubles_to_the_cap() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [0, 10, 20, 40, 80, 160, 300]
    assert restart_delay(30) == 300


def test_backoff_schedule_and_reset_after_a_healthy_period() -> None:
    history = CrashHistory()
    history = record_crash(history, now=0.0, running_since=0.0)
    assert history.crashes == 1 and may_start(history, 0.0)
    history = record_crash(history, now=1.0, running_since=0.5)
    assert history.crashes == 2
    assert not may_start(history, 5.0) and may_start(history, 11.0)
    history = record_crash(history, now=12.0, running_since=11.0)
    assert history.retry_at == 32.0
    # Ten minutes of healthy running forget the loop: the next crash restarts at once.
    history = record_crash(history, now=2000.0, running_since=1000.0)
    assert history.crashes == 1 and may_start(history, 2000.0)
    assert history.total_restarts == 4


def test_idle_needs_no_request_in_flight_and_the_timeout_elapsed() -> None:
    assert not is_idle(last_request_at=100, in_flight=0, now=105, timeout=10)
    assert is_idle(last_request_at=100, in_flight=0, now=110, timeout=10)
    assert not is_idle(last_request_at=0, in_flight=1, now=1000, timeout=10)
    assert sweep_interval([300, 0.4]) == 0.1
    assert sweep_interval([]) == 1.0


def test_templates_stay_at_any_age_and_go_least_recently_used_first_over_the_budget() -> None:
    dormant = [
        DormantTemplate("mid", last_used=50, memory_kb=30_000),
        DormantTemplate("old", last_used=0, memory_kb=30_000),
        DormantTemplate("new", last_used=90, memory_kb=30_000),
    ]
    plenty = {"available_kb": 10**7, "low_water_kb": 1}
    # Age alone evicts nothing, however long ago (a year, on the runtime's clock).
    assert templates_to_evict(dormant, now=365 * 86400, budget_kb=90_000, **plenty).drop == []
    # Over the budget: the least recently used go first, until the rest fit.
    assert templates_to_evict(dormant, now=100, budget_kb=89_999, **plenty).drop == ["old"]
    assert templates_to_evict(dormant, now=100, budget_kb=30_000, **plenty).drop == ["old", "mid"]
    assert templates_to_evict(dormant, now=100, budget_kb=0, **plenty).drop == ["old", "mid", "new"]
    # Within the budget but short of memory: least recently used first until enough is freed.
    assert templates_to_evict(
        dormant, now=100, budget_kb=10**9, available_kb=100_000, low_water_kb=150_000
    ).drop == ["old", "mid"]
    assert (
        templates_to_evict(
            dormant, now=100, budget_kb=10**9, available_kb=None, low_water_kb=150_000
        ).drop
        == []
    )
    # A use in the future of ``now`` (a clock step) counts as now; ties go by id.
    stepped = [
        DormantTemplate("b", last_used=500, memory_kb=10),
        DormantTemplate("a", last_used=100, memory_kb=10),
    ]
    assert templates_to_evict(stepped, now=100, budget_kb=10, **plenty).drop == ["a"]


def test_over_the_budget_templates_go_to_swap_when_they_can_and_paged_ones_do_not_count() -> None:
    plenty = {"available_kb": 10**7, "low_water_kb": 1}
    dormant = [
        DormantTemplate("paged", last_used=0, memory_kb=2_000, paged=True),
        DormantTemplate("old", last_used=10, memory_kb=30_000, pageable=True),
        DormantTemplate("alone", last_used=20, memory_kb=30_000, waits=True),
        DormantTemplate("shared", last_used=30, memory_kb=30_000),
        DormantTemplate("new", last_used=90, memory_kb=30_000, pageable=True),
    ]
    # 120 MB resident; the 2 MB left by a paged one is not the budget's.
    assert templates_to_evict(dormant, now=100, budget_kb=120_000, **plenty) == Evictions([], [])
    # Over it: the oldest to swap; the one about to get its own template waits; a shared one
    # that swap cannot take is dropped.
    evictions = templates_to_evict(dormant, now=100, budget_kb=60_000, swap_room_kb=10**6, **plenty)
    assert evictions == Evictions(page_out=["old"], drop=["shared"])
    # Swap full: dropped instead.
    assert templates_to_evict(dormant, now=100, budget_kb=60_000, swap_room_kb=0, **plenty) == (
        Evictions(page_out=[], drop=["old", "shared"])
    )
    # Short of memory: the least recently used go, paged ones too.
    short = templates_to_evict(
        dormant, now=100, budget_kb=10**9, available_kb=1_000, low_water_kb=2_500
    )
    assert short == Evictions(page_out=[], drop=["paged"])


def test_the_expected_wake_is_the_median_of_recent_wakes_else_the_default() -> None:
    assert expected_wake_ms([], DEFAULT_WAKE_MS["template"]) == DEFAULT_WAKE_MS["template"]
    assert expected_wake_ms([12.0, 400.0, 14.0], 15.0) == 14.0
    assert expected_wake_ms([10.0, 20.0], 15.0) == 15.0
    # Only the last WAKE_SAMPLES count: an old slow streak is forgotten.
    recent = [900.0] * WAKE_SAMPLES + [11.0] * WAKE_SAMPLES
    assert expected_wake_ms(recent, 400.0) == 11.0
    assert DEFAULT_WAKE_MS["template"] < DEFAULT_WAKE_MS["deep"]


def test_default_commands_split_into_pre_commands_and_server_argv() -> None:
    parsed = parse_server_command(
        "python manage.py migrate && gunicorn --bind 0.0.0.0:${PORT:-8000} mysite.wsgi", 8123
    )
    assert parsed is not None
    assert parsed.pre_commands == ("python manage.py migrate",)
    assert parsed.argv == ("gunicorn", "--bind", "0.0.0.0:8123", "mysite.wsgi")
    uv = parse_server_command("python -m uvicorn main:app --host 0.0.0.0 --port $PORT", 9)
    assert uv is not None and uv.server == "uvicorn" and uv.argv[:2] == ("uvicorn", "main:app")
    factory = parse_server_command("gunicorn 'app:create_app()'", 1)
    assert factory is not None and factory.argv == ("gunicorn", "app:create_app()")


def test_commands_the_template_cannot_reproduce_run_as_given() -> None:
    for command in (
        "uvicorn main:app --reload",
        "gunicorn app:app | tee log",
        "uvicorn main:app --workers $WEB_CONCURRENCY",  # not set: the shell shows what happens
        "newrelic-admin run-program gunicorn app:app",
        "./start.sh",
        "cd /srv && gunicorn app:app",
        "cd .. && gunicorn app:app",
        "gunicorn app:app --bind 0.0.0.0:$(cat port)",
        "gunicorn app:app; echo done",
        "uvicorn main:app --uds /tmp/s",
    ):
        assert parse_server_command(command, 8000) is None, command


def test_declared_server_command_lines_with_their_options_are_understood() -> None:
    env = {"WEB_CONCURRENCY": "3", "EMPTY": ""}
    procfile = parse_server_command(
        "python3 -m gunicorn --workers $WEB_CONCURRENCY --timeout 120 "
        "-k uvicorn.workers.UvicornWorker --config gunicorn.conf.py app.main:app "
        "--bind 0.0.0.0:${PORT:-8000}",
        8123,
        env,
    )
    assert procfile is not None and procfile.server == "gunicorn"
    assert procfile.argv == (
        "gunicorn", "--workers", "3", "--timeout", "120", "-k", "uvicorn.workers.UvicornWorker",
        "--config", "gunicorn.conf.py", "app.main:app", "--bind", "0.0.0.0:8123",
    )  # fmt: skip
    defaults = parse_server_command("uvicorn main:app --port ${APP_PORT:-9000} -w ${EMPTY:-2}", 1)
    assert defaults is not None and defaults.argv[-3:] == ("9000", "-w", "2")
    moved = parse_server_command(
        "cd backend && python manage.py migrate && WEB_CONCURRENCY=2 exec gunicorn cfg.wsgi", 1
    )
    assert moved is not None
    assert moved.chdir == "backend" and moved.env == {"WEB_CONCURRENCY": "2"}
    assert moved.pre_commands == ("cd backend && python manage.py migrate",)
    assert moved.argv == ("gunicorn", "cfg.wsgi")
    venv_bin = parse_server_command(".venv/bin/uvicorn main:app --host 0.0.0.0 --port $PORT", 5)
    assert venv_bin is not None and venv_bin.argv == (
        "uvicorn",
        "main:app",
        "--host",
        "0.0.0.0",
        "--port",
        "5",
    )
    hyper = parse_server_command("python -m hypercorn main:app -b 0.0.0.0:$PORT -w 2", 7)
    assert hyper is not None and hyper.server == "hypercorn"
    assert hyper.argv == ("hypercorn", "main:app", "-b", "0.0.0.0:7", "-w", "2")


def test_templates_to_warm_go_most_recently_used_first_never_used_last() -> None:
    candidates = [
        WarmCandidate("old", 100.0, 10),
        WarmCandidate("never-b", None, 10),
        WarmCandidate("recent", 900.0, 10),
        WarmCandidate("never-a", None, 10),
        WarmCandidate("middle", 500.0, 10),
    ]
    assert templates_to_warm(candidates, budget_kb=1000, now=1000.0) == [
        "recent",
        "middle",
        "old",
        "never-a",
        "never-b",
    ]


def test_templates_to_warm_stop_at_the_budget() -> None:
    candidates = [
        WarmCandidate("a", 30.0, 40),
        WarmCandidate("b", 20.0, 40),
        WarmCandidate("small-but-older", 10.0, 5),
    ]
    assert templates_to_warm(candidates, budget_kb=100, now=50.0) == ["a", "b", "small-but-older"]
    assert templates_to_warm(candidates, budget_kb=80, now=50.0) == ["a", "b"]
    # It stops at the first that does not fit: an older, smaller one does not jump the queue.
    assert templates_to_warm(candidates, budget_kb=79, now=50.0) == ["a"]
    assert templates_to_warm(candidates, budget_kb=39, now=50.0) == []
    assert templates_to_warm(candidates, budget_kb=0, now=50.0) == []
    assert templates_to_warm([], budget_kb=100, now=50.0) == []


def test_a_shared_template_counts_once_per_group() -> None:
    candidates = [
        WarmCandidate("p1-a", 30.0, 10, group="p1", group_kb=50),
        WarmCandidate("p1-b", 20.0, 10, group="p1", group_kb=50),
        WarmCandidate("p2-a", 10.0, 10, group="p2", group_kb=50),
    ]
    assert templates_to_warm(candidates, budget_kb=70, now=50.0) == ["p1-a", "p1-b"]
    assert templates_to_warm(candidates, budget_kb=130, now=50.0) == ["p1-a", "p1-b", "p2-a"]
    assert templates_to_warm(candidates, budget_kb=129, now=50.0) == ["p1-a", "p1-b"]


def test_a_template_last_measured_as_one_of_its_own_counts_no_shared_one() -> None:
    # A project's only deployment ends with a template of its own: warming it again after a
    # restart leaves no framework template beside it, so none is counted (the budget would
    # otherwise charge each such project the default shared template, 48 MB, and warm a
    # hundred 13 MB templates as if they were 61 MB each).
    own = Usage(1000.0, memory_kb=13_406, group=None, group_kb=None)
    forked = Usage(1000.0, memory_kb=4_000, group="p1:L:3.12", group_kb=40_000)
    assert warm_group("p1:L:3.12", own) is None
    assert warm_group("p1:L:3.12", forked) == "p1:L:3.12"
    assert warm_group("p1:L:3.12", None) == "p1:L:3.12"  # never measured: as the lock says
    assert warm_group("p1:L:3.12", Usage(1000.0)) == "p1:L:3.12"


def test_a_use_in_the_future_counts_as_now() -> None:
    candidates = [WarmCandidate("skewed", 5000.0, 1), WarmCandidate("now", 100.0, 1)]
    assert templates_to_warm(candidates, budget_kb=10, now=100.0) == ["now", "skewed"]


def test_templates_unused_long_enough_are_paged_out_once_per_use_oldest_first() -> None:
    candidates = [
        PageCandidate("fresh", last_used=950.0, paged_at=None),  # unused 50 s
        PageCandidate("old", last_used=100.0, paged_at=None),
        PageCandidate("older", last_used=50.0, paged_at=None),
        PageCandidate("paged", last_used=200.0, paged_at=500.0),  # nothing since: stays as is
        PageCandidate("used-since", last_used=600.0, paged_at=500.0),
        PageCandidate("skewed", last_used=5000.0, paged_at=None),  # a clock step: now
    ]
    swap = 10**9

    def due(after: float, limit: int = 8) -> list[str]:
        return templates_to_page_out(candidates, 1000.0, after, limit, swap).deployment_ids

    assert due(300.0) == ["older", "old", "used-since"]
    assert due(300.0, limit=2) == ["older", "old"]
    assert due(0.0) == []  # never
    assert due(30.0)[-1] == "fresh"


def test_templates_stay_resident_when_swap_would_not_hold_them() -> None:
    candidates = [
        PageCandidate("a", last_used=0.0, paged_at=None, memory_kb=30_000),
        PageCandidate("b", last_used=1.0, paged_at=None, memory_kb=30_000),
        PageCandidate("c", last_used=2.0, paged_at=None, memory_kb=30_000),
    ]
    plan = templates_to_page_out(candidates, 1000.0, 300.0, 8, swap_free_kb=100_000)
    assert (plan.deployment_ids, plan.swap_short) == (["a", "b", "c"], False)
    plan = templates_to_page_out(candidates, 1000.0, 300.0, 8, 100_000, reserve_kb=20_000)
    assert (plan.deployment_ids, plan.swap_short) == (["a", "b"], True)
    plan = templates_to_page_out(candidates, 1000.0, 300.0, 8, swap_free_kb=0)
    assert (plan.deployment_ids, plan.swap_short) == ([], True)


def test_a_fork_s_file_pages_are_the_ones_it_touched_itself(tmp_path: Path) -> None:
    """A fork copies no page-table entries of a read-only file mapping: the file pages present
    in it are those it faulted in (with the kernel's fault-around of up to 16 pages)."""
    data = tmp_path / "lib.so"
    data.write_bytes(os.urandom(128 * paging.PAGE))
    with data.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as area:
        start = _mapping_start(data)
        _ = area[100 * paging.PAGE]  # the parent's page, before the fork
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _ = area[0] + area[40 * paging.PAGE]
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            os._exit(0)
        try:
            os.read(ready_r, 1)
            pages = {
                (a - start) // paging.PAGE + i
                for a, n in paging.touched_file_pages(pid)
                if start <= a < start + 128 * paging.PAGE
                for i in range(n // paging.PAGE)
            }
        finally:
            os.write(done_w, b"1")
            os.waitpid(pid, 0)
            for fd in (ready_r, ready_w, done_r, done_w):
                os.close(fd)
    assert {0, 40} <= pages
    assert 100 not in pages


def _mapping_start(path: Path) -> int:
    for line in (Path("/proc/self/maps")).read_text().splitlines():
        if line.endswith(str(path)):
            return int(line.split("-", 1)[0], 16)
    raise AssertionError(f"{path} is not mapped")


def test_the_swap_file_is_half_the_memory_within_an_eighth_of_the_free_disk() -> None:
    gib = 1024 * 1024  # kB
    assert swap_file_size_mb(mem_total_kb=24 * gib, disk_free_kb=80 * gib) == 10 * 1024
    assert swap_file_size_mb(mem_total_kb=8 * gib, disk_free_kb=800 * gib) == 4 * 1024
    assert swap_file_size_mb(mem_total_kb=24 * gib, disk_free_kb=1 * gib) == 0  # too small
    assert swap_file_size_mb(mem_total_kb=400 * 1024, disk_free_kb=80 * gib) == 0


def test_the_pages_a_process_holds_are_found_as_ranges_and_merged() -> None:
    size = 64 * paging.PAGE
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for page in (0, 1, 2, 10, 63):
            area[page * paging.PAGE] = 1
        start = ctypes.addressof(ctypes.c_char.from_buffer(area))
        found = [
            (
                (max(a, start) - start) // paging.PAGE,
                (min(a + n, start + size) - max(a, start)) // paging.PAGE,
            )
            for a, n in paging.present_ranges(os.getpid())
            if a < start + size and a + n > start
        ]
        assert found == [(0, 3), (10, 1), (63, 1)]
        written = [
            ((max(a, start) - start) // paging.PAGE, (min(a + n, start + size) - max(a, start)))
            for a, n in paging.written_ranges(os.getpid())
            if a < start + size and a + n > start
        ]
        assert [(p, n // paging.PAGE) for p, n in written] == found  # its own, written pages
        absent = paging.absent_within(os.getpid(), [(start, size)])
        pages = [((a - start) // paging.PAGE, n // paging.PAGE) for a, n in absent]
        assert pages == [(3, 7), (11, 52)]  # what a read would bring in
        assert any(a <= start < a + n for a, n in paging.anonymous(os.getpid()))
    finally:
        area.close()
    assert paging.merge([(30, 1), (0, 10), (5, 10), (15, 5)]) == [(0, 20), (30, 1)]
    bounds = [(10, 10), (30, 10), (50, 5)]
    assert paging.within([(0, 15), (18, 15), (41, 3), (45, 20)], bounds) == [
        (10, 5),
        (18, 2),
        (30, 3),
        (50, 5),
    ]


def test_hot_sets_are_kept_most_recently_used_first_within_the_budget() -> None:
    hot = [HotSet("old", 10.0, 300), HotSet("new", 30.0, 500), HotSet("mid", 20.0, 400)]
    assert hot_sets_to_keep(hot, 1200) == {"old", "new", "mid"}
    assert hot_sets_to_keep(hot, 900) == {"new", "mid"}
    assert hot_sets_to_keep(hot, 800) == {"new", "old"}  # mid does not fit; the older one does
    assert hot_sets_to_keep(hot, 0) == set()


def test_rehearsals_go_to_the_most_recently_used_quiet_templates_first() -> None:
    candidates = [
        Rehearsal("old", 100.0),
        Rehearsal("recent", 900.0),
        Rehearsal("busy", 990.0),  # used 10 s ago: a user's wake may teach it first
        Rehearsal("future", 2000.0),  # a use past now counts as now
        Rehearsal("middle", 500.0),
    ]
    assert rehearsals_due(candidates, 1000.0, 60.0, 8) == ["recent", "middle", "old"]
    assert rehearsals_due(candidates, 1000.0, 60.0, 2) == ["recent", "middle"]
    assert rehearsals_due(candidates, 1000.0, 0.0, 2) == ["future", "busy"]
    assert rehearsals_due(candidates, 1000.0, 60.0, 0) == []


def test_idle_cost_adds_own_pss_and_an_even_share_of_a_shared_template() -> None:
    own = subprocess.Popen(["sleep", "30"])
    shared = subprocess.Popen(["sleep", "30"])
    try:
        figures = {own.pid: (3000, 1000, 500), shared.pid: (8000, 6000, 0)}
        reads: list[int] = []

        def read(pid: int) -> tuple[int, int, int]:
            reads.append(pid)
            return figures.get(pid, (0, 0, 0))

        kept = {
            "a": Kept(None, own.pid, True, "project:lock", None, shared.pid, (), 2),
            "b": Kept(None, None, True, "project:lock", None, shared.pid, (), 2),
            "solo": Kept(None, own.pid),
        }
        costs = measure(kept, read)
        assert costs["a"] == IdleCost(3000, 1000, 8000, 2, own_swap_kb=500)
        assert costs["a"].pss_kb == 3000 + 4000
        assert costs["b"].pss_kb == 4000  # its own processes are gone: its share only
        assert costs["solo"].pss_kb == 3000
        assert reads.count(shared.pid) == 1  # a shared template is read once per pass
    finally:
        for process in (own, shared):
            process.kill()
            process.wait()


def test_ranges_are_cut_into_steps_of_at_most_the_step() -> None:
    mib = 1 << 20
    groups = paging.steps([(0, 20 * mib), (100 * mib, 3 * mib)], 8 * mib)
    assert [sum(length for _, length in g) for g in groups] == [8 * mib, 8 * mib, 7 * mib]
    assert groups[2] == [(16 * mib, 4 * mib), (100 * mib, 3 * mib)]
    flat = [r for g in groups for r in g]
    assert paging.merge(flat) == [(0, 20 * mib), (100 * mib, 3 * mib)]  # nothing lost
    assert paging.steps([], 8 * mib) == []


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.pages = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_keeps_swap_traffic_under_its_rate_with_a_window_of_credit() -> None:
    t = FakeTime()
    rate = 64 * paging.PAGE * 1000  # 64,000 pages a second
    pacer = paging.Pacer(rate, lambda: False, traffic=lambda: t.pages, clock=t.clock, sleep=t.sleep)
    t.pages += 32_000  # half a second's worth, written at once
    pacer()
    assert t.slept == [pytest.approx(0.5)]
    t.now += 10.0  # a long quiet time earns one window of credit, not ten
    pacer()
    t.pages += 128_000  # two seconds' worth
    pacer()
    assert t.slept[-1] == pytest.approx(1.0)  # at most a window at a time
    assert pacer.waited >= 1.5


def test_the_pacer_steps_aside_while_a_wake_is_under_way_for_at_most_its_hold() -> None:
    t = FakeTime()
    busy_until = [0.3]
    pacer = paging.Pacer(
        1e12,
        lambda: t.now < busy_until[0],
        hold=2.0,
        traffic=lambda: 0,
        clock=t.clock,
        sleep=t.sleep,
    )
    pacer()
    assert 0.3 <= t.now < 0.32  # waited out the wake
    busy_until[0] = 100.0  # a wake that never ends: it goes on after the hold
    start = t.now
    pacer()
    assert t.now - start == pytest.approx(2.0, abs=0.01)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="process_madvise of another process needs root")
def test_a_paced_page_out_steps_through_a_large_mapping(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; held = bytearray(b'x' * (40 << 20)); "
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        calls = []
        done = paging.page_out_process(
            child.pid, paging.anonymous(child.pid), lambda: calls.append(1)
        )
        assert done >= 40 << 20
        assert len(calls) >= 4  # 40 MiB in steps of 8 MiB at most
    finally:
        child.kill()
        child.wait()


def test_walking_down_a_process_tree_finds_what_a_whole_scan_finds() -> None:
    # A shell with two children, one of which has a child of its own.
    tree = subprocess.Popen(
        ["sh", "-c", "sleep 30 & (sleep 30 & wait) & wait"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if len(procs.descendants(tree.pid)) >= 3:
                break
            time.sleep(0.02)
        scanned = procs.descendants(tree.pid, procs.parent_map())
        walked = procs.descendants(tree.pid)
        assert len(scanned) >= 3  # sleep, the subshell, its sleep
        assert sorted(walked) == sorted(scanned)
        assert procs.children(tree.pid) == [
            p for p in scanned if procs.stat_fields(p)[1] == str(tree.pid)
        ]  # type: ignore[index]
    finally:
        procs.kill_tree(tree.pid)
        tree.kill()
        tree.wait()
    assert procs.children(tree.pid) == []  # gone
