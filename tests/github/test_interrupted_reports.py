"""A restart that interrupts push builds still tells GitHub: their statuses end as failures.

The watch that would have reported a build's end lived in the killed process; the next start
marks the build failed ("interrupted by restart") and must say so on the commit, or GitHub shows
it pending for good.
"""

from __future__ import annotations

import signal
import time

import pytest

from .test_push_to_deploy import (
    TOKEN,
    Server,
    create_project,
    make_repo,
    running_server,
    two_pushes,
)

pytestmark = pytest.mark.slow


def test_push_builds_a_restart_interrupts_end_as_failed_statuses() -> None:
    with running_server() as server:
        _interrupt_and_restart(server)


def _interrupt_and_restart(server: Server) -> None:
    repo, shas = make_repo(server, "cut")
    create_project(server, "cut", repo, "secret-cut")
    assert server.api("PATCH", "/projects/cut", json={"repo_token": TOKEN}).status_code == 200
    answers = [server.deliver("secret-cut", body) for body in two_pushes(repo, shas)]
    assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
    ids = [r.json()["deployments"][0]["id"] for r in answers]
    # One build per project at a time: the second push waits in the queue, `building`.
    assert server.api("GET", f"/deployments/{ids[1]}").json()["status"] == "building"
    server.kill(signal.SIGKILL)

    server.start()
    after = {i: server.api("GET", f"/deployments/{i}").json() for i in ids}
    cut = [i for i, d in after.items() if d.get("failure_reason") == "interrupted by restart"]
    assert ids[1] in cut, after
    wanted = {after[i]["commit"] for i in cut}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        failed = {
            r.path.rsplit("/", 1)[1]: r.body
            for r in server.github.statuses()
            if r.body["state"] == "failure"
        }
        if wanted <= failed.keys():
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no failure status for {wanted}: {server.github.statuses()}")
    for sha in wanted:
        assert "interrupted by restart" in failed[sha]["description"]
        assert failed[sha]["target_url"].split("//", 1)[1].split(".", 1)[0] in cut
    for r in server.github.statuses():
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
