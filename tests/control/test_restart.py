"""kill -9 the server while deployments are building; after a restart none stays `building`."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from platformkit import Platform

from .serverkit import FASTAPI_APP, Server, unique, upload

pytestmark = pytest.mark.slow


def test_kill_9_mid_build_then_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    server = Server(
        data_dir=tmp_path / "data",
        database_url=url,
        extra_env={"PHEMERAL_BUILD_CONCURRENCY": "1"},  # the rest wait, `building` (queued)
    )
    server.data_dir.mkdir()
    server.start()
    try:
        name = unique("crash")
        with server.client() as api:
            api.post("/projects", json={"name": name})
            ids = [str(upload(api, name, FASTAPI_APP)["id"]) for _ in range(3)]
            statuses = [api.get(f"/deployments/{i}").json()["status"] for i in ids]
        assert "building" in statuses
        server.kill(signal.SIGKILL)
        assert server.proc is not None and server.proc.returncode == -signal.SIGKILL

        server.start()  # same data dir, same database
        with server.client() as api:
            after = [api.get(f"/deployments/{i}").json() for i in ids]
            assert all(d["status"] != "building" for d in after), after
            interrupted = [d for d in after if d["status"] == "failed"]
            assert interrupted, "at least the queued builds were interrupted"
            for d in interrupted:
                assert d["failure_reason"] == "interrupted by restart"
                assert d["finished_at"] is not None
                lines = api.get(f"/deployments/{d['id']}/logs/build").json()["lines"]
                assert lines[-1]["message"] == "failed: interrupted by restart"
                release = server.data_dir / "apps" / name / "releases" / str(d["id"])
                assert not release.exists()
            assert api.get(f"/projects/{name}").status_code == 200  # state survived
        assert list((server.data_dir / "uploads").glob("*.tar.gz")) == []
    finally:
        server.kill()
    # Nothing of the killed build stays mounted (its disk image, its release bind).
    assert str(server.data_dir) not in Path("/proc/self/mountinfo").read_text()


def test_replacing_the_admin_token_file_rotates_the_token(
    platform_factory: Callable[..., Platform],
) -> None:
    server = platform_factory()
    old = server.token
    server.stop()
    (server.data_dir / "admin-token").unlink()
    server.start()
    new = server.token
    assert new != old
    with server.client(new) as api:
        assert api.get("/projects").status_code == 200
    with server.client(old) as api:
        assert api.get("/projects").status_code == 401
