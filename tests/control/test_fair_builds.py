"""Builds that hang hold one slot each, of their own project only: another project's deploy
goes through while they hang, and a hanging project's next build waits behind its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .serverkit import FASTAPI_APP, Server, unique, upload, wait_done

pytestmark = pytest.mark.slow

# The verify stage imports the app, which never finishes importing.
HANGING = {
    "requirements.txt": "fastapi\nuvicorn\n",
    "main.py": "import time\nfrom fastapi import FastAPI\n\napp = FastAPI()\ntime.sleep(3600)\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("data-fair"), database_url=None).start()
    yield srv
    srv.kill()


def build_log(api: httpx.Client, deployment_id: str) -> list[str]:
    page = api.get(f"/deployments/{deployment_id}/logs/build", params={"limit": 1000}).json()
    return [line["message"] for line in page["lines"]]


def wait_for_line(api: httpx.Client, deployment_id: str, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in build_log(api, deployment_id)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{deployment_id} never logged {text!r}: {build_log(api, deployment_id)}")


def build_limits(deployment_id: str) -> tuple[int, int, int] | None:
    """CPU quota, period and memory limit of a running build's cgroup (v1 or v2)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        group = root / "phemeral" / f"build-{deployment_id}"
        if not group.is_dir():
            return None
        quota, period = (group / "cpu.max").read_text().split()
        return int(quota), int(period), int((group / "memory.max").read_text())
    cpu = root / "cpu" / "phemeral" / f"build-{deployment_id}"
    memory = root / "memory" / "phemeral" / f"build-{deployment_id}"
    if not cpu.is_dir():
        return None
    return (
        int((cpu / "cpu.cfs_quota_us").read_text()),
        int((cpu / "cpu.cfs_period_us").read_text()),
        int((memory / "memory.limit_in_bytes").read_text()),
    )


def test_two_hanging_builds_do_not_hold_up_a_third_project(server: Server) -> None:
    with server.client() as api:
        hanging = []
        for _ in range(2):
            name = unique("hang")
            api.post("/projects", json={"name": name})
            deployment = upload(api, name, HANGING)
            hanging.append((name, str(deployment["id"])))
        for _, deployment_id in hanging:
            wait_for_line(api, deployment_id, "importing main:app")  # stuck in verify
        for _, deployment_id in hanging:  # each build is bounded: 1 CPU, its memory limit
            limits = build_limits(deployment_id)
            if os.geteuid() == 0:
                assert limits == (100_000, 100_000, 4096 << 20), limits
        # the first hanging project's next build waits behind its own running build
        queued_behind = str(upload(api, hanging[0][0], FASTAPI_APP)["id"])

        other = unique("fair")
        api.post("/projects", json={"name": other})
        done = wait_done(api, str(upload(api, other, FASTAPI_APP)["id"]))
        assert done["status"] == "successful", done["failure_reason"]

        for _, deployment_id in hanging:  # still hanging meanwhile
            assert api.get(f"/deployments/{deployment_id}").json()["status"] == "building"
        assert "build started" not in build_log(api, queued_behind)
        assert build_log(api, queued_behind)[0].startswith("queued")
