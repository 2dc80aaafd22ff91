"""Rehearsals: a dormant template whose hot set a wake would miss gets one request no user
sent, and the first user's wake after it reads back only what it needs."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from phemeral.runtime.paged_tier import PagedTier
from phemeral.runtime.rehearsal import Rehearsals
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import ListSink, make_release
from .harness import request, swap_for_test, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="swap and process_madvise need root"),
]


def test_after_a_restart_a_paged_template_is_rehearsed_once_and_not_counted_as_a_use(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path / "app", "rehearse-1", "fastapi")
    did = release.deployment_id

    def lines(stream: str, text: str) -> int:
        return sum(text in m for m in sink.messages(did, stream))

    async def main() -> None:
        with swap_for_test(tmp_path):
            first = Runtime(settings, sink, share_templates=False)
            await first.start()
            try:
                first.register(release, idle_timeout=0.05)
                assert (await request(first, did))[0] == 200
                await wait_until(lambda: first.instances(did).state == "dormant")
            finally:
                await first.close()
            await wait_until(lambda: lines("stdout", "handled /") == 1)
            # Restarted with a template budget of 1 MB: warmed past it into swap, so paged
            # out with no hot set known (a wake would read its whole memory back).
            runtime = Runtime(
                replace(settings, warm_budget_mb=1, page_out_after=300.0, rehearse=True),
                sink,
                share_templates=False,
            )
            await runtime.start()
            try:
                runtime.register(release, idle_timeout=0.05)
                runtime.warm_templates()
                await runtime.warmed()
                await runtime.sweep()
                dep = runtime._deployments[did]
                await wait_until(lambda: runtime.instances(did).tier == "paged")
                assert PagedTier.hot_set(dep) is None and Rehearsals.needs(dep)
                await runtime.sweep()  # used seconds ago: a user's wake may come first
                await runtime._rehearsals.idle()
                assert lines("system", "rehearsal") == 0
                runtime._rehearsals.quiet = 0.0
                await runtime.sweep()
                await runtime._rehearsals.idle()
                await wait_until(lambda: lines("system", "rehearsal: GET / answered 200") == 1)
                await wait_until(lambda: lines("stdout", "handled /") == 2)  # the app served it
                state = runtime.instances(did)
                assert (state.state, state.tier) == ("dormant", "paged")  # paged out again
                assert dep.hot_how == "paged" and PagedTier.hot_set(dep) is not None
                assert not Rehearsals.needs(dep)
                # Not a use: no wake reported, none counted, its last use as it was.
                assert state.last_wake_at is None and state.last_wake_ms is None
                assert all(not samples for samples in runtime._wakes.values())
                assert dep.last_request_at == 0.0
                # Once per template.
                await runtime.sweep()
                await runtime._rehearsals.idle()
                assert lines("system", "rehearsal:") == 1
                # A user's wake now reads back its hot set only, not its whole memory.
                assert runtime.wake_kind(dep) in ("hot", "paged")
                assert (await request(runtime, did))[0] == 200
                woke = runtime.instances(did)
                assert woke.last_wake_at is not None and woke.last_wake_phases is not None
                assert sum(len(s) for s in runtime._wakes.values()) == 1
            finally:
                await runtime.close()

    asyncio.run(main())


def test_a_user_request_during_a_rehearsal_shares_its_instance_and_is_not_cut_off(
    tmp_path: Path, settings: Settings, sink: ListSink
) -> None:
    release = make_release(tmp_path / "app", "rehearse-2", "flask")
    did = release.deployment_id

    async def main() -> None:
        with swap_for_test(tmp_path):
            runtime = Runtime(
                replace(settings, page_out_after=300.0, rehearse=True), sink, share_templates=False
            )
            await runtime.start()
            try:
                runtime.register(release, idle_timeout=30.0)
                assert (await request(runtime, did))[0] == 200
                runtime.set_idle_timeout(did, 0.05)
                await wait_until(lambda: runtime.instances(did).state == "dormant")
                runtime.set_idle_timeout(did, 30.0)
                dep = runtime._deployments[did]
                await runtime._paged.page_out(dep)
                dep.hot_set = []  # as after a restart: no hot set known
                assert Rehearsals.needs(dep)
                rehearsal = asyncio.ensure_future(runtime._rehearsals.rehearse(dep))
                user = asyncio.ensure_future(request(runtime, did))  # arrives meanwhile
                assert await rehearsal
                assert (await user)[0] == 200
                # The user's request is a use: the instance is left to the idle sweep.
                state = runtime.instances(did)
                assert state.state == "running" and dep.last_request_at > 0
            finally:
                await runtime.close()

    asyncio.run(main())
