"""The runtime with real releases, real venvs and real processes (sandboxed when root)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from phemeral.errors import BootFailed, Unavailable
from phemeral.runtime import procs
from phemeral.runtime.idle import DEFAULT_WAKE_MS
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import DJANGO_FILES, ListBuildLog, ListSink, make_release
from .harness import (
    failed_request,
    get,
    request,
    run_with_runtime,
    wait_until,
)

pytestmark = pytest.mark.slow


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
        state = runtime.instances("idle-1")
        assert state.instances == 1
        # The wake's trace: each phase in order, the fork timed inside the template too.
        phases = state.last_wake_phases
        assert phases is not None and state.last_wake_ms is not None
        assert list(phases)[:5] == ["template", "view", "fork", "forked", "answer"]
        assert 0 < phases["forked"] < phases["fork"]
        assert phases["answer"] > 0
        # The wake's own figure ends when the server is up; the trace goes on to the answer.
        marked = sum(v for k, v in phases.items() if k not in ("forked", "loop_stalled"))
        assert marked >= state.last_wake_ms - 1

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
        shared_costs = [runtime._ledger.samples[did].cost for did in ("share-1", "share-2")]
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
