"""What the data plane keeps on disk and sends over its socket: round trips and refusals."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from phemeral.dataplane import routes_file, wire
from phemeral.dataplane.children import MAX_DELAY, restart_delay
from phemeral.dataplane.logrelay import LogRelay
from phemeral.dataplane.process import settings_from_json, settings_to_json
from phemeral.dataplane.registry import ReleaseRegistry
from phemeral.errors import BootFailed, NotFound, RuntimeFailure
from phemeral.models import (
    AppSpec,
    DeploymentRoute,
    DeploymentStatus,
    HostPolicy,
    InstanceState,
    ProcessState,
    Release,
    RoutingSnapshot,
    RuntimeLogLine,
    StartCommandSource,
    Upstream,
)
from phemeral.router.backends import WakeBusy
from phemeral.secrets import SecretBox
from phemeral.settings import Settings

SNAPSHOT = RoutingSnapshot(
    base_domain="example.test",
    deployments={
        "a1b2c3d4e5f6": DeploymentRoute(DeploymentStatus.SUCCESSFUL, "shop", "production"),
        "b1b2c3d4e5f6": DeploymentRoute(DeploymentStatus.BUILDING, "shop", "staging"),
    },
    domains={"shop-production": "a1b2c3d4e5f6", "shop-staging": None},
    custom_domains={"shop.example.com": "a1b2c3d4e5f6"},
    policies={"shop.example.com": HostPolicy(https_redirect=True, hsts_max_age=300)},
)


def release(tmp: Path, did: str = "a1b2c3d4e5f6") -> Release:
    return Release(
        deployment_id=did,
        project="shop",
        environment="production",
        path=tmp / did,
        workdir=tmp / did / "src",
        venv=tmp / did / ".venv",
        python_version="3.12",
        start_command="uvicorn main:app --port $PORT",
        start_command_source=StartCommandSource.AUTODETECTED,
        app=AppSpec(framework="fastapi", interface="asgi", target="main:app"),
        env={"DATABASE_PASSWORD": "hunter2-very-secret"},
        uid=20001,
        lock_hash="abc",
    )


def test_frames_round_trip_and_refuse_garbage() -> None:
    data = wire.frame({"op": "ping", "id": 1})
    size = wire.frame_length(data[:4])
    assert wire.parse(data[4 : 4 + size]) == {"op": "ping", "id": 1}
    with pytest.raises(wire.FrameError):
        wire.parse(b"[1, 2]")
    with pytest.raises(wire.FrameError):
        wire.parse(b"not json")
    with pytest.raises(wire.FrameError):
        wire.frame_length((wire.MAX_FRAME + 1).to_bytes(4, "big"))


def test_values_round_trip(tmp_path: Path) -> None:
    assert wire.snapshot_from_json(wire.snapshot_to_json(SNAPSHOT)) == SNAPSHOT
    assert set(wire.snapshot_to_json(SNAPSHOT)) == {f.name for f in fields(RoutingSnapshot)}
    state = InstanceState(
        instances=1,
        state="running",
        tier="running",
        idle_memory_kb=10,
        idle_pss_kb=14,
        idle_swap_kb=30,
        hot_set_in=True,
        expected_wake_ms=15.5,
        last_wake_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_wake_ms=12.5,
        last_wake_phases={"read_back": 0.4, "fork": 3.1, "forked": 1.2, "answer": 8.0},
        restarts=2,
        last_exit="exited with code 1",
        wake_path="template",
        processes=(
            ProcessState("worker", "celery -A tasks worker", "running", 1, None, datetime.now(UTC)),
            ProcessState("clock", "python clock.py", "stopped"),
        ),
    )
    # every field is set above: a field added to InstanceState fails here until it travels
    assert all(getattr(state, f.name) != f.default for f in fields(InstanceState))
    assert wire.state_from_json(json.loads(json.dumps(wire.state_to_json(state)))) == state
    up = Upstream("127.0.0.1", 4567)
    assert wire.upstream_from_json(wire.upstream_to_json(up)) == up
    rel = release(tmp_path)
    assert wire.release_in(json.loads(json.dumps(wire.release_out(rel)))) == rel
    line = RuntimeLogLine("a1b2c3d4e5f6", "i-1", "stdout", datetime.now(UTC), "hello")
    assert wire.lines_from_json(wire.lines_to_json([line])) == [line]


def test_errors_keep_their_class_and_message() -> None:
    for exc in (BootFailed("the app exited"), NotFound("no such deployment")):
        back = wire.error_from_json(wire.error_to_json(exc))
        assert type(back) is type(exc) and back.message == exc.message
    # a subclass defined elsewhere travels as its nearest class of the error tree
    busy = wire.error_from_json(wire.error_to_json(WakeBusy("256 waiting")))
    assert busy.message == "256 waiting" and busy.code == "unavailable"
    other = wire.error_from_json(wire.error_to_json(ValueError("boom")))
    assert isinstance(other, RuntimeFailure) and "boom" in other.message


def test_routing_table_is_saved_atomically_and_private(tmp_path: Path) -> None:
    assert routes_file.load(tmp_path) is None
    routes_file.save(tmp_path, SNAPSHOT)
    path = routes_file.routes_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert routes_file.load(tmp_path) == SNAPSHOT
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    path.write_text('{"base_domain": "x"')  # torn by hand: never by `save`
    assert routes_file.load(tmp_path) is None


def test_release_records_keep_the_environment_encrypted(tmp_path: Path) -> None:
    box = SecretBox.open(tmp_path)
    registry = ReleaseRegistry(tmp_path, box)
    rel = release(tmp_path)
    registry.save(rel)
    registry.save(release(tmp_path, "c1b2c3d4e5f6"))
    files = sorted(registry.dir.glob("*.json"))
    assert [f.stem for f in files] == ["a1b2c3d4e5f6", "c1b2c3d4e5f6"]
    for file in files:
        assert file.stat().st_mode & 0o777 == 0o600
        assert b"hunter2" not in file.read_bytes()
    assert registry.load_all()[0] == rel
    registry.remove("c1b2c3d4e5f6")
    registry.remove("c1b2c3d4e5f6")  # twice is fine
    assert [r.deployment_id for r in registry.load_all()] == ["a1b2c3d4e5f6"]
    with pytest.raises(ValueError, match="not a deployment id"):
        registry.remove("../secret")
    assert registry.load_current() == []
    registry.save_current(["c1b2c3d4e5f6", "a1b2c3d4e5f6"])
    assert registry.load_current() == ["a1b2c3d4e5f6", "c1b2c3d4e5f6"]
    # another data dir's key cannot read them: the record is skipped, not trusted
    other = ReleaseRegistry(tmp_path, SecretBox.open(tmp_path / "other"))
    assert other.load_all() == []


def test_log_relay_is_bounded() -> None:
    relay = LogRelay(limit=3)
    lines = [RuntimeLogLine("d", "i", "stdout", datetime.now(UTC), str(n)) for n in range(5)]
    relay.write(lines[:2])
    relay.write(lines[2:])
    assert [line.message for line in relay.drain()] == ["2", "3", "4"]
    assert relay.drain() == []


def test_restart_delay_grows_and_is_capped() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.0
    assert delays == sorted(delays)
    assert delays[-1] == MAX_DELAY


def test_settings_reach_the_children_unchanged(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        port=8123,
        database_url="postgresql+psycopg://u@h/db",
        allow_local_repos=True,
        python_paths=(Path("/opt/py"), Path("/usr/bin")),
        router_processes=3,
    )
    assert settings_from_json(json.loads(json.dumps(settings_to_json(settings)))) == settings
    assert os.pathsep in settings_to_json(settings)["python_paths"]
