"""Release retention: every environment's current deployment, the pinned ones and the newest N
stay; the rest are collected (release folder and venv removed, no longer routed or promotable)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from phemeral.deploys import to_collect
from phemeral.deploys.retention import Candidate

from .serverkit import FASTAPI_APP, Server, unique, upload, wait_done


def test_the_rule() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def c(n: int, *, pinned: bool = False, current: bool = False) -> Candidate:
        return Candidate(f"d{n}", t0 + timedelta(minutes=n), pinned, current)

    everything = [c(1, pinned=True), c(2, current=True), c(3), c(4), c(5), c(6)]
    assert to_collect(everything, keep=2) == ["d4", "d3"]  # newest first
    assert to_collect(everything, keep=0) == ["d6", "d5", "d4", "d3"]
    assert to_collect(everything, keep=10) == []
    assert to_collect([c(1, current=True)], keep=0) == []
    assert to_collect([], keep=3) == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("data-retention")
    srv = Server(data_dir=data, database_url=None, extra_env={"PHEMERAL_KEEP_RELEASES": "1"})
    yield srv.start()
    srv.kill()


@pytest.mark.slow
def test_retention_keeps_current_pinned_and_newest(server: Server) -> None:
    name = unique("keep")
    with server.client() as api:
        api.post("/projects", json={"name": name})
        api.post(f"/projects/{name}/environments", json={"name": "staging"})

        def deploy(**form: str) -> str:
            done = wait_done(api, str(upload(api, name, FASTAPI_APP, **form)["id"]))
            assert done["status"] == "successful", done["failure_reason"]
            return str(done["id"])

        def release_exists(deployment_id: str) -> bool:
            return (server.data_dir / "apps" / name / "releases" / deployment_id).is_dir()

        def collected(deployment_id: str) -> bool:
            view = api.get(f"/deployments/{deployment_id}").json()
            return view["collected_at"] is not None and not release_exists(deployment_id)

        def wait_collected(*ids: str) -> None:  # retention runs just after a build finishes
            deadline = time.monotonic() + 60
            while not all(collected(i) for i in ids):
                assert time.monotonic() < deadline, f"{ids} not collected"
                time.sleep(0.2)

        d1 = deploy()
        pinned = api.patch(f"/deployments/{d1}", json={"pinned": True}).json()
        assert pinned["pinned"] is True
        staging = deploy(environment="staging")  # current on staging
        d2 = deploy()  # current on production
        d3 = deploy(promote="false")
        d4 = deploy(promote="false")  # the newest: keep = 1
        wait_collected(d3)  # neither current, pinned nor among the newest
        for kept in (d1, staging, d2, d4):
            assert not collected(kept) and release_exists(kept), kept
        # a collected deployment is no longer served nor promotable
        host = {"Host": f"{d3}.phemeral.localhost"}
        assert httpx.get(server.url, headers=host).status_code == 404
        refused = api.post(f"/deployments/{d3}/promote", json={})
        assert refused.status_code == 409 and "collected" in refused.json()["error"]["message"]
        assert api.patch(f"/deployments/{d3}", json={"pinned": True}).status_code == 409
        # the kept ones still answer
        assert httpx.get(server.url, headers={"Host": f"{d4}.phemeral.localhost"}).json() == {
            "ok": True
        }

        api.patch(f"/deployments/{d1}", json={"pinned": False})
        d5 = deploy(promote="false")
        wait_collected(d1, d4)
        for kept in (staging, d2, d5):
            assert not collected(kept), kept
