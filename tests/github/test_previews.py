"""Pull-request previews end to end: a real `phemeral serve`, a real git repository on a local
path, signed ``pull_request`` deliveries, real builds; GitHub's API is the local recording fake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .gitrepo import commit, git, init_repo, pull_request_body
from .test_push_to_deploy import APP, TOKEN, Server, create_project, running_server

pytestmark = pytest.mark.slow

MAIN = """\
import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def index() -> dict[str, str]:
    return {"version": "VERSION", "secret": os.environ.get("PREVIEW_SECRET", "none")}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server() as srv:
        yield srv


def version_commit(repo: Path, version: str) -> str:
    files = {p.name: p.read_text() for p in APP.iterdir() if p.is_file()}
    files["main.py"] = MAIN.replace("VERSION", version)
    return commit(repo, files, f"version {version}")


def preview_answer(server: Server, project: str, number: int) -> httpx.Response:
    host = {"Host": f"{project}-pr-{number}.phemeral.localhost"}
    return httpx.get(f"{server.url}/", headers=host, timeout=60)


def deliver_pr(server: Server, secret: str, body: bytes) -> httpx.Response:
    response = server.deliver(secret, body, event="pull_request")
    assert response.status_code in (200, 201), response.text
    return response


def test_a_pull_request_preview_from_open_to_close(server: Server) -> None:
    repo = init_repo(server.repos / "pv")
    version_commit(repo, "main")
    git(repo, "checkout", "-q", "-b", "feature")
    heads = [version_commit(repo, f"head{i}") for i in (1, 2, 3)]
    create_project(server, "pv", repo, "secret-pv")
    assert server.api("PATCH", "/projects/pv", json={"repo_token": TOKEN}).status_code == 200
    assert server.api(
        "POST", "/projects/pv/preview-variables", json={"values": {"PREVIEW_SECRET": "s3"}}
    ).is_success

    ids = []
    for action, head, version in zip(
        ("opened", "synchronize", "synchronize"), heads, ("head1", "head2", "head3"), strict=True
    ):
        body = pull_request_body(action, 7, head_sha=head, clone_url=str(repo))
        [item] = deliver_pr(server, "secret-pv", body).json()["deployments"]
        assert item["environment"] == "pr-7"
        assert item["pull_request"] == 7 and item["secrets"] is True
        assert server.wait(item["id"])["status"] == "successful"
        ids.append(item["id"])
        answer = preview_answer(server, "pv", 7)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"version": version, "secret": "s3"}
    assert server.current("pv", "pr-7") == ids[-1]
    # Production is untouched by previews.
    assert server.current("pv") is None

    [listed] = server.api("GET", "/projects/pv/previews").json()["items"]
    assert listed["state"] == "open" and listed["head_sha"] == heads[-1]
    assert listed["url"] == "http://pv-pr-7.phemeral.localhost:" + server.url.rsplit(":", 1)[1]

    closed = deliver_pr(
        server,
        "secret-pv",
        pull_request_body("closed", 7, head_sha=heads[-1], clone_url=str(repo), merged=True),
    ).json()
    assert closed["status"] == "closed"
    assert set(closed["retired"]) == set(ids)
    assert preview_answer(server, "pv", 7).status_code == 404
    gone = httpx.get(
        f"{server.url}/", headers={"Host": f"{ids[-1]}.phemeral.localhost"}, timeout=30
    )
    assert gone.status_code == 404
    # The history stays: deployments and their logs.
    assert {d["id"] for d in server.deployments("pv")} == set(ids)
    [listed] = server.api("GET", "/projects/pv/previews").json()["items"]
    assert listed["state"] == "closed" and listed["url"] is None
    logs = server.api("GET", f"/deployments/{ids[0]}/logs/build").json()["lines"]
    assert logs

    # GitHub heard about every head: pending then success, and one comment edited in place.
    deadline = time.monotonic() + 20
    while len(server.github.statuses()) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    states = {(r.path.rsplit("/", 1)[1], r.body["state"]) for r in server.github.statuses()}
    assert {(h, s) for h in heads for s in ("pending", "success")} <= states
    comments = server.github.comments()
    created = [c for c in comments if c.method == "POST"]
    assert len(created) == 1, [c.path for c in comments]
    assert created[0].path == "/repos/octo/hello/issues/7/comments"
    edits = [c for c in comments if c.method == "PATCH"]
    assert edits and all(c.path.startswith("/repos/octo/hello/issues/comments/") for c in edits)
    last = comments[-1].body["body"]
    assert "pv-pr-7.phemeral.localhost" in last
    assert heads[-1][:12] in last and "ready" in last
    assert TOKEN not in server.log.read_text()


def test_a_fork_pull_request_gets_no_secrets_until_approved(server: Server) -> None:
    repo = init_repo(server.repos / "fk")
    version_commit(repo, "main")
    git(repo, "checkout", "-q", "-b", "fork-feature")
    head = version_commit(repo, "fork")
    create_project(server, "fk", repo, "secret-fk")
    assert server.api("PATCH", "/projects/fk", json={"repo_token": TOKEN}).status_code == 200
    assert server.api(
        "POST", "/projects/fk/preview-variables", json={"values": {"PREVIEW_SECRET": "hidden"}}
    ).is_success
    body = pull_request_body(
        "opened", 3, head_sha=head, head_repo="mallory/hello", clone_url=str(repo)
    )
    [item] = deliver_pr(server, "secret-fk", body).json()["deployments"]
    assert item["secrets"] is False
    assert server.wait(item["id"])["status"] == "successful"
    assert preview_answer(server, "fk", 3).json() == {"version": "fork", "secret": "none"}

    deadline = time.monotonic() + 20
    while not server.github.statuses() and time.monotonic() < deadline:
        time.sleep(0.2)
    pending = [
        r.body
        for r in server.github.statuses()
        if r.path.endswith(head) and r.body["state"] == "pending"
    ]
    assert pending and "without secrets" in pending[0]["description"]

    approved = server.api("POST", "/projects/fk/previews/3/approve", json={})
    assert approved.status_code == 200, approved.text
    rebuilt = approved.json()["deployment"]
    assert server.wait(rebuilt)["status"] == "successful"
    assert preview_answer(server, "fk", 3).json() == {"version": "fork", "secret": "hidden"}


def test_unknown_pull_request_actions_change_nothing(server: Server) -> None:
    repo = init_repo(server.repos / "quietpr")
    head = version_commit(repo, "x")
    create_project(server, "quietpr", repo, "secret-quietpr")
    body = pull_request_body("labeled", 9, head_sha=head, clone_url=str(repo))
    response = server.deliver("secret-quietpr", body, event="pull_request")
    assert response.status_code == 202
    assert "labeled" in response.json()["reason"]
    assert server.api("GET", "/projects/quietpr/previews").json()["items"] == []


def test_a_preview_gets_its_own_database_destroyed_with_it(server: Server) -> None:
    repo = init_repo(server.repos / "pgp")
    version_commit(repo, "main")
    git(repo, "checkout", "-q", "-b", "db-feature")
    head = version_commit(repo, "db")
    create_project(server, "pgp", repo, "secret-pgp")
    created = server.api("POST", "/services", json={"kind": "postgres", "project": "pgp"})
    assert created.status_code == 201, created.text
    production_db = created.json()

    body = pull_request_body("opened", 5, head_sha=head, clone_url=str(repo))
    [item] = deliver_pr(server, "secret-pgp", body).json()["deployments"]
    done = server.wait(item["id"])
    assert done["status"] == "successful", done
    preview_service = done["service_variables"]["DATABASE_URL"]
    assert preview_service != production_db["name"]
    shown = server.api("GET", f"/services/{preview_service}").json()
    assert shown["environment"] == "pr-5" and shown["kind"] == "postgres"
    assert shown["database"] != production_db["database"]
    assert shown["user"] != production_db["user"]

    closed = pull_request_body("closed", 5, head_sha=head, clone_url=str(repo))
    deliver_pr(server, "secret-pgp", closed)
    names = [s["name"] for s in server.api("GET", "/projects/pgp/services").json()["items"]]
    assert names == [production_db["name"]]
