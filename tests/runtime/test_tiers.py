"""The tiers a dormant deployment wakes from, with real releases and processes: the deep tier,
a restart's warming within its budget, past it into swap, the paged tier and its hot sets."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from dataclasses import replace
from pathlib import Path

import pytest

from phemeral.runtime import paging, procs
from phemeral.runtime.idle import DEFAULT_WAKE_MS
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import ListSink, make_release
from .harness import (
    has_sys_resource,
    locked_kb,
    request,
    run_with_runtime,
    swap_for_test,
    use_in_order,
    wait_until,
)

pytestmark = pytest.mark.slow


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
                phases = runtime.instances("paged-1").last_wake_phases or {}
                # (``read_back_cut`` first when a loaded box took over 50 ms to submit them)
                marked = [p for p in phases if p != "read_back_cut"]
                assert marked[:2] == ["read_back", "template"], phases
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


@pytest.mark.skipif(paging.SYS_IOPRIO_SET is None, reason="ioprio_set's number is not known here")
def test_background_paging_runs_in_the_idle_io_class_and_wakes_do_not(
    settings: Settings, sink: ListSink
) -> None:
    """Page-outs, reclaims and hot sets read back run on a thread of their own whose swap
    traffic the block layer serves after everyone else's; the threads a wake's blocking calls
    run on keep the default class."""
    runtime = Runtime(settings, sink)
    try:
        background = runtime._paged._background.submit(paging.io_priority_class).result(10)
        assert background == paging.IOPRIO_CLASS_IDLE
        assert asyncio.run(asyncio.to_thread(paging.io_priority_class)) == 0
        assert paging.io_priority_class() == 0
    finally:
        runtime._paged.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="swap and process_madvise need root")
def test_a_wake_goes_on_when_its_reads_cannot_be_submitted_at_once(
    tmp_path: Path, settings: Settings, sink: ListSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = make_release(tmp_path / "app", "stuck-1", "flask")
    real = paging.read_back

    def stuck(pid: int, ranges: paging.Ranges | None = None) -> int:
        time.sleep(1.5)  # as when the disk's queue is full of page-outs
        return real(pid, ranges)

    async def main() -> None:
        with swap_for_test(tmp_path):
            runtime = Runtime(settings, sink, share_templates=False)
            await runtime.start()
            try:
                runtime.register(release, idle_timeout=0.05)
                assert (await request(runtime, "stuck-1"))[0] == 200
                await wait_until(lambda: runtime.instances("stuck-1").state == "dormant")
                await runtime.page_out_template("stuck-1")
                monkeypatch.setattr(paging, "read_back", stuck)
                assert (await request(runtime, "stuck-1"))[0] == 200
                phases = runtime.instances("stuck-1").last_wake_phases or {}
                assert "read_back_cut" in phases, phases
                assert phases["read_back"] < 1000, phases  # not the 1.5 s the reads took
            finally:
                await runtime.close()

    asyncio.run(main())
