"""The runtime with real releases, real venvs and real processes (sandboxed when root)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phemeral.errors import BootFailed, Unavailable
from phemeral.models import Release, Upstream
from phemeral.runtime import paging, procs
from phemeral.runtime.idle import DEFAULT_WAKE_MS
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import DJANGO_FILES, ListBuildLog, ListSink, make_release

pytestmark = pytest.mark.slow


async def get(upstream: Upstream, path: str = "/", timeout: float = 20) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


async def request(runtime: Runtime, deployment_id: str, path: str = "/") -> tuple[int, bytes]:
    """What the router does: ensure running, count the request in flight, forward it."""
    upstream = await runtime.ensure_running(deployment_id)
    runtime.request_started(deployment_id)
    try:
        return await get(upstream, path)
    finally:
        runtime.request_finished(deployment_id)


async def failed_request(runtime: Runtime, deployment_id: str, path: str) -> bool:
    """True when the connection ended without an HTTP answer (the server process died)."""
    try:
        status, _ = await request(runtime, deployment_id, path)
    except (OSError, ValueError, IndexError):
        return True
    return status == 0


def run_with_runtime(
    settings: Settings,
    sink: ListSink,
    body: Callable[[Runtime], Awaitable[None]],
    **options: Any,
) -> None:
    async def main() -> None:
        runtime = Runtime(settings, sink, **options)
        await runtime.start()
        try:
            await body(runtime)
        finally:
            await runtime.close()

    asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds; generous, since a loaded CI box runs several times
    slower than a quiet one (a passing wait costs only its own time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_a_django_app_that_refuses_the_platform_host_passes_with_a_warning_that_says_the_fix(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    files = dict(DJANGO_FILES)
    files["mysite/settings.py"] = (  # the host is checked by middleware that reads it
        files["mysite/settings.py"]
        .replace("ALLOWED_HOSTS = ['*']", "ALLOWED_HOSTS = ['myapp.herokuapp.com']")
        .replace("MIDDLEWARE = []", "MIDDLEWARE = ['django.middleware.common.CommonMiddleware']")
    )
    release = make_release(tmp_path, "strict-1", "django", files=files)
    build_log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, build_log)

    run_with_runtime(settings, sink, body)
    text = build_log.text()
    assert "the app answered on $PORT (400)" in text
    assert f"add '.{settings.base_domain}'" in text and "ALLOWED_HOSTS" in text


@pytest.mark.parametrize("stack", ["fastapi", "flask", "django"])
def test_boot_check_then_scale_to_zero_then_wake_from_the_template(
    stack: str, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, f"{stack}-1", stack)
    build_log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, build_log)
        assert "the app answered on $PORT (200)" in build_log.text()
        assert "warning" not in build_log.text()
        state = runtime.instances(release.deployment_id)
        assert state.instances == 1 and state.state == "running"
        await runtime.sweep()  # not idle yet: it keeps running
        assert runtime.instances(release.deployment_id).instances == 1
        runtime.set_idle_timeout(release.deployment_id, 0.01)
        await wait_until(lambda: runtime.instances(release.deployment_id).state == "dormant")
        await runtime.sweep()  # measures what the dormant deployment keeps
        state = runtime.instances(release.deployment_id)
        assert (state.instances, state.state, state.tier) == (0, "dormant", "template")
        assert state.idle_memory_kb > 1000
        assert state.idle_pss_kb >= state.idle_memory_kb  # PSS: its unique pages and a share
        assert state.expected_wake_ms == DEFAULT_WAKE_MS["template"]  # none measured yet
        runtime.set_idle_timeout(release.deployment_id, 300)
        pids = set()
        for _ in range(2):
            status, body_bytes = await request(runtime, release.deployment_id)
            assert status == 200
            assert json.loads(body_bytes)["hello"] == stack
            pids.add(json.loads(body_bytes)["pid"])
            assert runtime.instances(release.deployment_id).state == "running"
        assert len(pids) == 1  # the second request reused the running instance
        await wait_until(lambda: "handled /" in sink.messages(release.deployment_id, "stdout"))

    run_with_runtime(settings, sink, body)


def test_a_burst_of_100_first_requests_starts_exactly_one_instance(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "burst-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        results = await asyncio.gather(*(request(runtime, "burst-1") for _ in range(100)))
        assert [status for status, _ in results] == [200] * 100
        assert len({json.loads(b)["pid"] for _, b in results}) == 1
        starts = [m for m in sink.messages("burst-1", "system") if m.startswith("stopping")]
        assert starts == []
        assert runtime.instances("burst-1").instances == 1

    run_with_runtime(settings, sink, body)


def test_idle_instances_stop_and_the_next_request_wakes_a_new_one(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "idle-1", "flask")

    async def body(runtime: Runtime) -> None:
        runtime.register(release, idle_timeout=0.3)
        await request(runtime, "idle-1")
        # In flight: never idle, however long it takes.
        runtime.request_started("idle-1")
        await asyncio.sleep(1.0)
        assert runtime.instances("idle-1").instances == 1
        runtime.request_finished("idle-1")
        await wait_until(lambda: runtime.instances("idle-1").state == "dormant", timeout=5)
        assert runtime.instances("idle-1").instances == 0
        await wait_until(lambda: any("(idle)" in m for m in sink.messages("idle-1", "system")))
        status, _ = await request(runtime, "idle-1")
        assert status == 200
        assert runtime.instances("idle-1").instances == 1

    run_with_runtime(settings, sink, body)


def test_retire_drains_the_request_in_flight_before_stopping(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "drain-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        slow = asyncio.create_task(request(runtime, "drain-1", "/slow?seconds=1.5"))
        await wait_until(lambda: runtime.instances("drain-1").instances == 1)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await runtime.retire("drain-1")
        status, payload = await slow
        assert status == 200 and json.loads(payload) == {"slept": 1.5}
        assert time.monotonic() - started >= 1.0  # it waited for the request
        assert runtime.instances("drain-1").instances == 0
        with pytest.raises(Unavailable):
            await runtime.ensure_running("drain-1")

    run_with_runtime(settings, sink, body)


def test_graceful_stop_lets_the_server_finish_a_request_after_sigterm(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "term-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release, idle_timeout=0.2)
        upstream = await runtime.ensure_running("term-1")
        # A request the router did not count (in-flight 0): idle stop sends SIGTERM while it
        # runs, and uvicorn's graceful shutdown still answers it.
        slow = asyncio.create_task(get(upstream, "/slow?seconds=1"))
        await wait_until(lambda: runtime.instances("term-1").state == "stopping", timeout=5)
        status, _ = await slow
        assert status == 200
        await wait_until(lambda: runtime.instances("term-1").instances == 0)

    run_with_runtime(settings, sink, body, stop_timeout=5)


def test_crashes_restart_immediately_then_back_off(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "crash-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        await request(runtime, "crash-1")
        assert await failed_request(runtime, "crash-1", "/crash")
        await wait_until(lambda: runtime.instances("crash-1").restarts == 1)
        state = runtime.instances("crash-1")
        assert state.last_exit == "exited with code 3"
        # The first restart is immediate (the deployment was in use, so it restarts itself).
        await wait_until(lambda: runtime.instances("crash-1").instances == 1)
        status, _ = await request(runtime, "crash-1")
        assert status == 200
        assert await failed_request(runtime, "crash-1", "/crash")
        await wait_until(lambda: runtime.instances("crash-1").restarts == 2)
        assert runtime.instances("crash-1").state == "backoff"
        with pytest.raises(Unavailable, match=r"crash-looping .* next restart in 10 s"):
            await runtime.ensure_running("crash-1")
        await wait_until(
            lambda: any("crashed (exited with code 3)" in m for m in sink.messages("crash-1"))
        )

    run_with_runtime(settings, sink, body)


def test_a_custom_command_that_never_binds_fails_its_boot_check_with_its_output(
    tmp_path: Path, data_dir: Path, sink: ListSink
) -> None:
    settings = Settings(data_dir=data_dir, boot_timeout=1.5)
    release = make_release(
        tmp_path,
        "never-1",
        "fastapi",
        custom=True,
        start_command="echo listening elsewhere; exec sleep 30",
    )
    build_log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        started = time.monotonic()
        with pytest.raises(BootFailed, match=r"within 1\.5 s"):
            await runtime.boot_check(release, build_log)
        assert time.monotonic() - started < 8
        assert "listening elsewhere" in build_log.text()
        assert runtime.instances("never-1").instances == 0

    run_with_runtime(settings, sink, body)


def test_an_app_that_crashes_on_import_fails_its_boot_check(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "broken-1",
        "fastapi",
        files={"main.py": "import fastapi\nraise RuntimeError('missing DATABASE_URL')\n"},
    )
    build_log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        with pytest.raises(BootFailed, match="missing DATABASE_URL"):
            await runtime.boot_check(release, build_log)
        assert "boot check failed" in build_log.text()

    run_with_runtime(settings, sink, body)


def test_a_custom_command_that_exits_fails_its_boot_check_with_the_exit_code(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path, "exit-1", "flask", custom=True, start_command="echo bad config >&2; exit 4"
    )
    build_log = ListBuildLog()

    async def body(runtime: Runtime) -> None:
        with pytest.raises(BootFailed, match="exited with code 4"):
            await runtime.boot_check(release, build_log)
        assert "bad config" in build_log.text()

    run_with_runtime(settings, sink, body)


def test_custom_commands_run_as_given_with_port_and_environment(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "custom-1",
        "fastapi",
        custom=True,
        start_command='echo "greeting=$GREETING"; exec uvicorn main:app --port $PORT',
        env={"GREETING": "hi"},
    )

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(release, ListBuildLog())
        status, payload = await request(runtime, "custom-1")
        assert status == 200 and json.loads(payload)["hello"] == "fastapi"
        await wait_until(lambda: "greeting=hi" in sink.messages("custom-1", "stdout"))
        assert runtime.instances("custom-1").tier == "running"
        await runtime.retire("custom-1")
        assert runtime.instances("custom-1").instances == 0

    run_with_runtime(settings, sink, body)


def test_long_lines_are_split_and_floods_are_marked(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "logs-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        await request(runtime, "logs-1", "/long?n=40000")
        await wait_until(lambda: any(len(m) > 1000 for m in sink.messages("logs-1", "stdout")))
        await asyncio.sleep(0.2)
        long_pieces = [m for m in sink.messages("logs-1", "stdout") if set(m) == {"x"}]
        assert [len(m) for m in long_pieces] == [16384, 16384, 40000 - 2 * 16384]
        await request(runtime, "logs-1", "/flood?n=20000")
        await wait_until(
            lambda: any("lines dropped" in m for m in sink.messages("logs-1", "system"))
        )
        await asyncio.sleep(0.3)
        flood = [m for m in sink.messages("logs-1", "stdout") if m.startswith("flood line")]
        assert 300 <= len(flood) < 2000  # the burst, then about 200 lines/s
        dropped = sum(
            int(m.split()[1]) for m in sink.messages("logs-1", "system") if "dropped" in m
        )
        assert len(flood) + dropped == 20000
        line = next(x for x in sink.lines if x.message.startswith("flood line"))
        assert line.instance.startswith("i-") and line.stream == "stdout"

    run_with_runtime(settings, sink, body, log_rate=200, log_burst=300)


def test_the_deep_tier_holds_nothing_and_still_wakes(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "deep-1", "flask")

    async def body(runtime: Runtime) -> None:
        runtime.register(release, idle_timeout=0.05)
        await request(runtime, "deep-1")
        # A budget of 0: the sweep drops the template as soon as the deployment is dormant.
        await wait_until(lambda: runtime.instances("deep-1").tier == "none")
        state = runtime.instances("deep-1")
        assert (state.tier, state.idle_memory_kb, state.state) == ("none", 0, "stopped")
        assert state.idle_pss_kb == 0
        status, _ = await request(runtime, "deep-1")
        assert status == 200

    # Without the paged tier (with it, past the budget a template goes to swap first).
    run_with_runtime(replace(settings, warm_budget_mb=0, page_out_after=0), sink, body)


def test_a_restarted_platform_replaces_what_the_last_run_left(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    template_release = make_release(tmp_path, "adopt-1", "fastapi")
    custom_release = make_release(
        tmp_path / "c",
        "adopt-2",
        "fastapi",
        custom=True,
        start_command="exec uvicorn main:app --port $PORT",
    )

    async def main() -> None:
        first = Runtime(settings, sink)
        await first.start()
        for release in (template_release, custom_release):
            first.register(release)
            await request(first, release.deployment_id)
        records = list(first._records.dir.glob("*.json"))
        assert len(records) == 2
        launchers = [json.loads(r.read_text())["pids"][0]["pid"] for r in records]
        trees = {pid: [pid, *procs.descendants(pid)] for pid in launchers}
        assert all(len(tree) >= 2 for tree in trees.values())
        # The platform "dies" without stopping anything (and without reacting any more: a
        # dead process restarts nothing); a second runtime takes over.
        for dep in first._deployments.values():
            dep.instance = None
        second = Runtime(settings, sink)
        await second.start()
        try:
            for tree in trees.values():
                await wait_until(lambda t=tree: not any(procs.start_time(p) for p in t))
            assert list(second._records.dir.glob("*.json")) == []
            for release in (template_release, custom_release):
                second.register(release)
                status, _ = await request(second, release.deployment_id)
                assert status == 200
        finally:
            await second.close()
            for dep in first._deployments.values():
                if dep.template is not None:
                    await dep.template.close(timeout=1)
            first.capture.close()

    asyncio.run(main())


def test_a_restarted_runtime_warms_the_most_recently_used_templates_within_its_budget(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    older = make_release(tmp_path / "a", "warm1", "fastapi")
    recent = make_release(tmp_path / "b", "warm2", "fastapi")
    unused = make_release(tmp_path / "c", "warm3", "fastapi")
    releases = (older, recent, unused)
    usage_path = settings.data_dir / "runtime" / "usage.json"

    def tiers(runtime: Runtime) -> dict[str, tuple[str, str]]:
        return {
            r.deployment_id: (
                runtime.instances(r.deployment_id).state,
                runtime.instances(r.deployment_id).tier,
            )
            for r in releases
        }

    async def first_run() -> None:
        runtime = Runtime(settings, sink)
        await runtime.start()
        try:
            for release in releases:
                runtime.register(release)
            for release in (older, recent):  # in this order: ``recent`` is used last
                assert (await request(runtime, release.deployment_id))[0] == 200
                runtime.set_idle_timeout(release.deployment_id, 0.01)
                await wait_until(
                    lambda r=release: runtime.instances(r.deployment_id).state == "dormant"
                )
            await runtime.sweep()  # measures the dormant templates
        finally:
            await runtime.close()

    async def next_run(budget_mb: int, current: set[str]) -> dict[str, tuple[str, str]]:
        # Without the paged tier: past the budget nothing is warmed (with it, see below).
        runtime = Runtime(replace(settings, warm_budget_mb=budget_mb, page_out_after=0), sink)
        await runtime.start()
        try:
            for release in releases:
                runtime.register(release)
            assert all(t == ("stopped", "none") for t in tiers(runtime).values())
            runtime.warm_templates(current)
            await runtime.warmed()
            # The sweep measures what was warmed and keeps it: warming and the budget agree.
            await runtime.sweep()
            warmed = tiers(runtime)
            for did, (_, tier) in warmed.items():
                assert (runtime.instances(did).idle_pss_kb > 1024) == (tier == "template")
            return warmed
        finally:
            await runtime.close()

    asyncio.run(first_run())
    usage = json.loads(usage_path.read_text())
    assert set(usage) == {"warm1", "warm2"}
    assert usage["warm2"]["last_used"] > usage["warm1"]["last_used"]
    assert usage["warm1"]["memory_kb"] > 1024 and usage["warm2"]["memory_kb"] > 1024

    # A budget that holds the most recently used template only (with a margin: the sweep
    # measures it again once loaded).
    assert (
        usage["warm2"]["memory_kb"] * 1.3
        < usage["warm1"]["memory_kb"] + usage["warm2"]["memory_kb"]
    )
    budget_mb = -(-int(usage["warm2"]["memory_kb"] * 1.3) // 1024)
    assert asyncio.run(next_run(budget_mb, set())) == {
        "warm1": ("stopped", "none"),
        "warm2": ("dormant", "template"),
        "warm3": ("stopped", "none"),
    }
    # A budget below it: nothing at all (it stops at the first that does not fit).
    below_mb = usage["warm2"]["memory_kb"] // 2048
    assert all(t == ("stopped", "none") for t in asyncio.run(next_run(below_mb, set())).values())
    # The default budget: both used ones, and a current one never used (last).
    assert asyncio.run(next_run(1024, {"warm3"})) == {
        "warm1": ("dormant", "template"),
        "warm2": ("dormant", "template"),
        "warm3": ("dormant", "template"),
    }
    lines = sink.messages(stream="system")
    assert "template loaded ahead of its first request (warm start)" in lines


async def use_in_order(runtime: Runtime, releases: list[Release]) -> None:
    """Register each, serve one request, and wait until it scaled to zero, in this order."""
    for release in releases:
        runtime.register(release, idle_timeout=0.05)
        assert (await request(runtime, release.deployment_id))[0] == 200
        await wait_until(lambda r=release: runtime.instances(r.deployment_id).state == "dormant")


def test_dormant_templates_stay_at_any_age_and_only_the_budget_evicts_them(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    releases = [make_release(tmp_path / n, f"lru{n}", "flask") for n in ("1", "2", "3")]
    ids = [r.deployment_id for r in releases]
    offset = [0.0]  # the runtime's clock, moved forward by hand

    def clock() -> float:
        return time.monotonic() + offset[0]

    async def main() -> None:
        runtime = Runtime(
            replace(settings, warm_budget_mb=1024, page_out_after=0), sink, clock=clock
        )
        await runtime.start()
        try:
            await use_in_order(runtime, releases)  # lru3 is the most recent
            await runtime.sweep()
            assert [runtime.instances(d).tier for d in ids] == ["template"] * 3
            # Hours later than the 30 minutes that once dropped a template: nothing goes.
            offset[0] += 3 * 3600
            await runtime.sweep()
            states = [runtime.instances(d) for d in ids]
            assert [s.tier for s in states] == ["template"] * 3
            assert all(s.idle_pss_kb > 1000 for s in states)
            # Each woke once, from nothing resident: a deep wake; the next is from a template.
            assert all(s.expected_wake_ms == DEFAULT_WAKE_MS["template"] for s in states)
            assert (await request(runtime, "lru3"))[0] == 200
            handed_ms = runtime.instances("lru3").last_wake_ms
            assert len(runtime._wakes["template"]) == 1  # to the end of its first answer
            answered_ms = runtime._wakes["template"][0]
            assert handed_ms is not None and answered_ms >= handed_ms
            await wait_until(lambda: runtime.instances("lru3").state == "dormant")
            await runtime.sweep()
            assert runtime.instances("lru1").expected_wake_ms == answered_ms  # the one measured
            # A budget that holds the most recently used one only: the others go, oldest first.
            newest = runtime.instances("lru3").idle_pss_kb
            runtime.template_budget_kb = newest + newest // 2
            await runtime.sweep()
            states = [runtime.instances(d) for d in ids]
            assert [(s.tier, s.state) for s in states] == [
                ("none", "stopped"),
                ("none", "stopped"),
                ("template", "dormant"),
            ]
            assert [s.idle_pss_kb for s in states[:2]] == [0, 0]
            assert len(runtime._wakes["deep"]) == 3  # the first request of each
            assert states[0].expected_wake_ms == sorted(runtime._wakes["deep"])[1]
            await wait_until(
                lambda: (
                    sum("over the template budget" in m for m in sink.messages(stream="system"))
                    == 2
                )
            )
            # An evicted deployment still wakes (from the deep tier).
            assert (await request(runtime, "lru1"))[0] == 200
        finally:
            await runtime.close()

    asyncio.run(main())


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="swap and process_madvise need root")
def test_over_the_template_budget_templates_go_to_swap_and_a_restart_warms_into_it(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    releases = [make_release(tmp_path / n, f"over{n}", "flask") for n in ("1", "2", "3")]
    ids = [r.deployment_id for r in releases]

    async def main() -> None:
        with swap_for_test(tmp_path):
            assert paging.swap_free_kb() > 0, "no swap to page out to"
            runtime = Runtime(replace(settings, warm_budget_mb=1024), sink, share_templates=False)
            await runtime.start()
            try:
                await use_in_order(runtime, releases)  # over3 is the most recent
                await runtime.sweep()
                assert [runtime.instances(d).tier for d in ids] == ["template"] * 3
                # A budget that holds the most recently used one only: the others go to swap
                # (the paged tier), oldest first, not to the deep tier.
                newest = runtime.instances("over3").idle_pss_kb
                runtime.template_budget_kb = newest + newest // 2
                await runtime.sweep()
                await runtime.sweep()
                states = [runtime.instances(d) for d in ids]
                assert [(s.tier, s.state) for s in states] == [
                    ("paged", "dormant"),
                    ("paged", "dormant"),
                    ("template", "dormant"),
                ]
                said = "least recently used, over the template budget"
                await wait_until(  # log lines reach the sink in batches
                    lambda: sum(said in m for m in sink.messages(stream="system")) == 2
                )
                assert (await request(runtime, "over1"))[0] == 200  # wakes from swap
                await wait_until(lambda: runtime.instances("over1").state == "dormant")
            finally:
                await runtime.close()
            # After a restart the same budget warms all three: past it into swap.
            budget_mb = -(-(newest + newest // 2) // 1024)
            runtime = Runtime(
                replace(settings, warm_budget_mb=budget_mb), sink, share_templates=False
            )
            await runtime.start()
            try:
                for release in releases:
                    runtime.register(release)
                runtime.warm_templates()
                await runtime.warmed()
                await runtime.sweep()
                await runtime.sweep()
                tiers = [runtime.instances(d).tier for d in ids]
                assert "none" not in tiers and tiers.count("template") >= 1, tiers
                assert tiers.count("paged") >= 1, tiers
            finally:
                await runtime.close()

    asyncio.run(main())


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="swap and process_madvise need root")
def test_a_template_learns_its_reads_once_even_when_they_pass_the_hot_set_cap(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path / "app", "once-1", "flask")

    async def main() -> None:
        with swap_for_test(tmp_path):
            runtime = Runtime(replace(settings, hot_set_mb=1), sink, share_templates=False)
            await runtime.start()
            try:
                runtime.register(release, idle_timeout=0.05)
                assert (await request(runtime, "once-1"))[0] == 200
                dep = runtime._deployments["once-1"]
                # the sweep writes the dormant template out to learn its reads (before that first
                # wake, or after it, as it came)...
                await wait_until(lambda: dep.template in (dep.hot_learning, dep.learned_from))
                if dep.hot_learning is dep.template:
                    assert (await request(runtime, "once-1"))[0] == 200
                await wait_until(lambda: dep.learned_from is dep.template)
                await wait_until(lambda: runtime.instances("once-1").state == "dormant")
                # ...which pass a 1 MiB cap: no hot set, and not tried again for this template
                assert dep.learned_from is dep.template and dep.hot_how != "learning"
                for _ in range(3):
                    await runtime.sweep()
                assert dep.hot_learning is None
                assert runtime.instances("once-1").idle_swap_kb == 0  # all mapped back
            finally:
                await runtime.close()

    asyncio.run(main())


@contextlib.contextmanager
def swap_for_test(tmp_path: Path) -> Iterator[None]:
    """The host's swap if it has some, else a small swap file of the test's own, turned off
    after."""
    swap = None if paging.swap_free_kb() else paging.ensure_swap_file(tmp_path, 256)
    try:
        yield
    finally:
        if swap is not None:
            paging.release_swap_file(swap)


def has_sys_resource() -> bool:
    """This process holds CAP_SYS_RESOURCE (a container may take it away from root)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def locked_kb(pid: int) -> int:
    """``VmLck`` of a process (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    return 0


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="swap and process_madvise need root")
def test_a_long_unused_template_is_paged_out_to_swap_and_still_wakes_from_it(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path / "app", "paged-1", "fastapi")
    offset = [0.0]  # the runtime's clock, moved forward by hand

    def clock() -> float:
        return time.monotonic() + offset[0]

    async def main() -> None:
        with swap_for_test(tmp_path):
            assert paging.swap_free_kb() > 0, "no swap to page out to"
            runtime = Runtime(
                replace(settings, page_out_after=300.0), sink, clock=clock, share_templates=False
            )
            await runtime.start()
            runtime.hot_set_budget_kb = 0  # hot sets learned but none kept in, until said below
            try:
                runtime.register(release, idle_timeout=0.05)
                status, body = await request(runtime, "paged-1")
                assert (status, body.startswith(b'{"hello":"fastapi"')) == (200, True)
                await wait_until(lambda: runtime.instances("paged-1").state == "dormant")
                dep = runtime._deployments["paged-1"]
                # On the template tier already. A sweep writes a dormant template's anonymous
                # pages out once, so that its next wake shows what it reads too; if the runtime's
                # own sweep did not get there before this first wake, that wake taught it what its
                # fork wrote and the file pages it faulted in, and the next sweep does it now.
                assert dep.hot_template is dep.template and 512 < dep.hot_kb <= 12 * 1024
                if dep.hot_how == "written":
                    written_kb = dep.hot_kb
                    await runtime.sweep()
                    assert dep.hot_learning is dep.template
                    status, body = await request(runtime, "paged-1")
                    assert (status, body.startswith(b'{"hello":"fastapi"')) == (200, True)
                    await wait_until(lambda: runtime.instances("paged-1").state == "dormant")
                    assert written_kb < dep.hot_kb, (written_kb, dep.hot_kb)  # reads too
                assert dep.hot_how == "learning" and dep.hot_learning is None
                assert dep.hot_template is dep.template and dep.hot_kb <= 12 * 1024
                await runtime.sweep()
                resident = runtime.instances("paged-1")
                assert (resident.tier, resident.idle_swap_kb) == ("template", 0)
                assert resident.idle_pss_kb > 10 * 1024
                offset[0] += 200  # unused for less than page_out_after: stays resident
                await runtime.sweep()
                assert runtime.instances("paged-1").tier == "template"
                offset[0] += 200
                await runtime.sweep()  # pages it out
                await runtime.sweep()  # measures what stays resident
                paged = runtime.instances("paged-1")
                assert (paged.tier, paged.state) == ("paged", "dormant")
                assert paged.idle_pss_kb < resident.idle_pss_kb / 3
                assert paged.idle_swap_kb > 5 * 1024
                assert paged.expected_wake_ms == DEFAULT_WAKE_MS["paged"]
                cgroup = runtime._deployments["paged-1"].cgroup
                if cgroup is not None:  # once written, its pages leave memory (no swap cache)
                    await asyncio.sleep(1.1)
                    await runtime.sweep()
                    held = cgroup.memory_kb()
                    assert held is not None and held < 8 * 1024, held
                # The wake forks the same template: the reads of its hot set (out: past the
                # budget) are submitted first.
                status, body = await request(runtime, "paged-1")
                assert (status, body.startswith(b'{"hello":"fastapi"')) == (200, True)
                assert len(runtime._wakes["paged"]) == 1
                await wait_until(lambda: runtime.instances("paged-1").state == "dormant")
                await runtime.sweep()
                assert (
                    runtime.instances("paged-1").tier == "paged"
                )  # the template was not read back
                said = "template paged out to swap"
                await wait_until(
                    lambda: sum(said in m for m in sink.messages("paged-1", "system")) == 1
                )
                before = runtime._deployments["paged-1"].paged_at
                await runtime.sweep()  # not used for page_out_after since: not paged out again
                assert runtime._deployments["paged-1"].paged_at == before
                offset[0] += 400  # used since it was paged out: paged out again, once
                # The pages it and its fork touched became the template's hot set (learned at the
                # fork's stop); its anonymous part is what keeping it costs.
                hot_kb = dep.hot_kb
                assert dep.hot_template is dep.template and 1024 < hot_kb <= 12 * 1024, hot_kb
                assert sum(n for _, n in dep.hot_set) >= hot_kb * 1024
                before = dep.paged_at
                runtime.hot_set_budget_kb = 1024 * 1024
                await runtime.sweep()
                assert dep.paged_at > before
                await wait_until(
                    lambda: sum(said in m for m in sink.messages("paged-1", "system")) == 2
                )
                if cgroup is not None:  # reclaimed, then the hot set read back in and mapped
                    await asyncio.sleep(1.1)
                    await runtime.sweep()
                    await runtime.sweep()
                    again = runtime.instances("paged-1")
                    assert again.tier == "paged" and dep.hot_in  # the next wake needs no read-back
                    assert again.hot_set_in and again.expected_wake_ms == DEFAULT_WAKE_MS["hot"]
                    # Locked there: neither the kernel's reclaim nor a host's pageout takes it (as
                    # much as the memlock limit holds, if it could not be raised: anonymous first).
                    limit_kb = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] // 1024
                    can_raise = os.geteuid() == 0 and has_sys_resource()
                    expected = hot_kb if can_raise else min(hot_kb, limit_kb)
                    assert dep.hot_pid is not None and locked_kb(dep.hot_pid) >= expected - 64
                    assert (
                        paged.idle_pss_kb + hot_kb // 2 < again.idle_pss_kb < resident.idle_pss_kb
                    )
                    # Past the hot-set budget it is paged out again, and leaves memory.
                    runtime.hot_set_budget_kb = hot_kb - 1
                    await runtime.sweep()
                    assert not dep.hot_in
                    await asyncio.sleep(1.1)
                    await runtime.sweep()
                    await runtime.sweep()
                    out = runtime.instances("paged-1")
                    assert out.tier == "paged" and not dep.hot_in and not out.hot_set_in
                    assert locked_kb(dep.hot_pid) == 0
                    assert out.idle_pss_kb < again.idle_pss_kb - hot_kb // 2, (out, again)
                status, body = await request(runtime, "paged-1")
                assert (status, body.startswith(b'{"hello":"fastapi"')) == (200, True)
            finally:
                await runtime.close()

    asyncio.run(main())


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_a_memory_bomb_is_killed_by_its_limit_and_reported(
    tmp_path: Path, data_dir: Path, sink: ListSink
) -> None:
    settings = Settings(data_dir=data_dir, boot_timeout=20, app_memory_mb=160)
    release = make_release(tmp_path, "bomb-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        await request(runtime, "bomb-1")
        assert await failed_request(runtime, "bomb-1", "/bomb")
        await wait_until(lambda: runtime.instances("bomb-1").restarts == 1, timeout=20)
        assert runtime.instances("bomb-1").last_exit == "killed: memory limit exceeded (160 MB)"
        await wait_until(
            lambda: any("memory limit exceeded" in m for m in sink.messages("bomb-1", "system"))
        )
        # Another deployment next to it is untouched and the bomb's template serves again.
        await wait_until(lambda: runtime.instances("bomb-1").instances == 1, timeout=20)
        status, _ = await request(runtime, "bomb-1")
        assert status == 200

    run_with_runtime(settings, sink, body)


def test_ensure_running_refuses_unknown_deployments(settings: Settings, sink: ListSink) -> None:
    async def body(runtime: Runtime) -> None:
        with pytest.raises(Unavailable):
            await runtime.ensure_running("nope")
        assert runtime.instances("nope").instances == 0

    run_with_runtime(settings, sink, body)


def test_deployments_of_one_project_share_a_framework_template_but_not_their_env(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    first = make_release(tmp_path, "share-1", "fastapi", lock_hash="L1", env={"SECRET": "one"})
    second = make_release(tmp_path, "share-2", "fastapi", lock_hash="L1", env={"SECRET": "two"})
    solo = make_release(tmp_path / "solo", "solo-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        await runtime.boot_check(first, ListBuildLog())
        learner = runtime._deployments["share-1"].template
        assert learner is not None
        await runtime.boot_check(second, ListBuildLog())
        # Once the shared template preloaded what the first app imported, the first
        # deployment's own template is forked again (it then shares those pages too).
        await wait_until(lambda: runtime._deployments["share-1"].template is not learner)
        shared = runtime.shared_templates()
        assert [s["deployments"] for s in shared] == [["share-1", "share-2"]]
        for did, secret in (("share-1", "one"), ("share-2", "two")):
            status, payload = await request(runtime, did, "/env?name=SECRET")
            assert status == 200 and json.loads(payload) == {"value": secret}
        for did in ("share-1", "share-2"):
            await runtime._stop_instance(runtime._deployments[did], "idle")
            state = runtime.instances(did)
            assert state.tier == "template"
        # A deployment forked from the shared template costs far less than one on its own.
        await runtime.boot_check(solo, ListBuildLog())
        await runtime._stop_instance(runtime._deployments["solo-1"], "idle")
        await runtime.sweep()  # measures what each dormant deployment keeps
        solo_kb = runtime.instances("solo-1").idle_memory_kb
        assert 0 < runtime.instances("share-2").idle_memory_kb < solo_kb / 2
        # Its idle PSS counts its half of the shared template as well: the two deployments'
        # figures add up to their own templates and the shared one.
        shared_costs = [runtime._samples[did].cost for did in ("share-1", "share-2")]
        assert [c.shared_by for c in shared_costs] == [2, 2]
        assert all(c.shared_pss_kb > 1000 for c in shared_costs)
        for did, cost in zip(("share-1", "share-2"), shared_costs, strict=True):
            state = runtime.instances(did)
            assert state.idle_pss_kb == cost.own_pss_kb + cost.shared_pss_kb // 2
            assert state.idle_pss_kb > state.idle_memory_kb
        assert int(runtime.shared_templates()[0]["memory_kb"]) > 0  # type: ignore[call-overload]
        status, _ = await request(runtime, "share-2")
        assert status == 200
        # Retiring both ends the shared template too.
        await runtime.retire("share-1")
        assert runtime.shared_templates()[0]["deployments"] == ["share-2"]
        await runtime.retire("share-2")
        assert runtime.shared_templates() == []

    run_with_runtime(settings, sink, body)


@pytest.mark.parametrize(
    ("stack", "command"),
    [
        ("fastapi", "uvicorn main:app --host 0.0.0.0 --port $PORT --workers 2"),
        ("flask", "gunicorn --bind 0.0.0.0:$PORT --workers 2 app:app"),
    ],
)
def test_the_worker_count_of_the_default_command_is_kept(
    stack: str, command: str, tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, f"workers-{stack}", stack, start_command=command)

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        await runtime.ensure_running(release.deployment_id)
        instance = runtime._deployments[release.deployment_id].instance
        assert instance is not None and len(instance.pids) == 2
        # Both workers accept on the one socket: concurrent requests reach both. A worker
        # still starting (a loaded box) takes none at first: bursts for up to 10 s.
        pids: set[int] = set()
        deadline = time.monotonic() + 10
        while len(pids) < 2 and time.monotonic() < deadline:
            results = await asyncio.gather(
                *(request(runtime, release.deployment_id) for _ in range(8))
            )
            pids |= {json.loads(body)["pid"] for _, body in results}
            await asyncio.sleep(0.05)
        assert len(pids) == 2
        await runtime.retire(release.deployment_id)

    run_with_runtime(settings, sink, body)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is about running as root")
def test_a_release_without_an_app_uid_never_runs_as_root(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = replace(make_release(tmp_path, "rootless-1", "flask"), uid=None)

    async def body(runtime: Runtime) -> None:
        with pytest.raises(BootFailed, match="refusing to run untrusted code as root"):
            await runtime.boot_check(release, ListBuildLog())
        assert runtime.instances("rootless-1").instances == 0

    run_with_runtime(settings, sink, body)


def test_workers_that_reach_max_requests_are_replaced_not_counted_as_crashes(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(
        tmp_path,
        "maxreq-1",
        "flask",
        start_command="gunicorn --bind 0.0.0.0:$PORT --max-requests 2 app:app",
    )

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        pids = set()
        for _ in range(6):
            status, payload = await request(runtime, "maxreq-1")
            assert status == 200
            pids.add(json.loads(payload)["pid"])
            await asyncio.sleep(0.1)  # let the worker that reached its limit be replaced
        assert len(pids) >= 2
        state = runtime.instances("maxreq-1")
        assert (state.restarts, state.state) == (0, "running")

    run_with_runtime(settings, sink, body)


def test_when_a_shared_template_dies_no_server_it_forked_is_left_behind(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "orphan-1", "fastapi", lock_hash="L9")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        status, _ = await request(runtime, "orphan-1")
        assert status == 200
        launcher = runtime._shared[next(iter(runtime._shared))].template.host_pid
        assert launcher is not None
        zygote = str(runtime._zygote_path)
        tree = [
            p
            for p in procs.descendants(launcher)
            if p in procs.with_argument(zygote) and Path(f"/proc/{p}/comm").read_text() != "bwrap\n"
        ]
        # The shared template, the deployment's template(s) (a refreshed one may sit beside
        # the one that forked the running server), the server.
        assert len(tree) >= 3
        framework = min(tree, key=lambda p: procs.start_time(p) or 0)
        os.kill(framework, 15)  # the shared template is terminated
        await wait_until(lambda: not any(procs.start_time(p) for p in tree), timeout=20)
        await wait_until(lambda: runtime.instances("orphan-1").instances == 0)

    run_with_runtime(settings, sink, body)


def test_a_request_during_scale_down_gets_a_fresh_instance_without_waiting_for_the_drain(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path, "during-1", "fastapi")

    async def body(runtime: Runtime) -> None:
        runtime.register(release)
        upstream = await runtime.ensure_running("during-1")
        # A slow request the old instance is still finishing while it scales down.
        slow = asyncio.create_task(get(upstream, "/slow?seconds=1.5"))
        await asyncio.sleep(0.2)
        stop = asyncio.create_task(runtime._stop_instance(runtime._deployments["during-1"], "idle"))
        await wait_until(lambda: runtime.instances("during-1").state == "stopping")
        status, _ = await request(runtime, "during-1")
        assert status == 200
        assert not slow.done()  # answered while the old instance was still draining
        assert (await slow)[0] == 200  # and the old one still finished its request
        await stop
        state = runtime.instances("during-1")
        assert (state.instances, state.state) == (1, "running")
        assert len(runtime._deployments["during-1"].draining) == 0

    run_with_runtime(settings, sink, body, stop_timeout=5)
