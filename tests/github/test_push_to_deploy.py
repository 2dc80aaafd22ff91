"""Push to deploy end to end: a real `phemeral serve`, real git repositories on local paths,
signed deliveries over HTTP, real builds; GitHub's statuses API is a local recording server.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from platformkit import PG_ADMIN, Platform, pg_database

from .fake_github import FakeGitHub, start_fake_github
from .gitrepo import commit, git, headers, init_repo, push_body

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "fixtures" / "build" / "uv_fastapi"
ZERO = "0" * 40
TOKEN = "ghp_e2e_token_never_in_logs_0123456789"


class Server(Platform):
    """The platform with GitHub's API on a local recording server and local repositories."""

    github: FakeGitHub
    repos: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def database(self) -> str | None:
        """The PostgreSQL database name, when on PostgreSQL."""
        return self.database_url.rsplit("/", 1)[1] if self.database_url else None

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/api{path}", headers=self.auth, timeout=30, **kwargs
        )

    def deliver(
        self, secret: str, body: bytes, *, delivery: str | None = None, event: str = "push"
    ) -> httpx.Response:
        sent = headers(secret, body, event=event, delivery=delivery)
        return httpx.post(f"{self.url}/api/webhooks/github", content=body, headers=sent, timeout=30)

    def deployments(self, project: str) -> list[dict[str, Any]]:
        response = self.api("GET", f"/projects/{project}/deployments", params={"limit": 100})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def wait(self, deployment_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d: dict[str, Any] = self.api("GET", f"/deployments/{deployment_id}").json()
            if d["status"] != "building":
                return d
            time.sleep(0.3)
        raise AssertionError(f"deployment {deployment_id} still building after {timeout} s")

    def current(self, project: str, environment: str = "production") -> str | None:
        envs = self.api("GET", f"/projects/{project}").json()["environments"]
        [env] = [e for e in envs if e["name"] == environment]
        current: str | None = env["current_deployment_id"]
        return current


@contextlib.contextmanager
def running_server(database_url: str | None = None) -> Iterator[Server]:
    """`phemeral serve` with local repositories allowed and GitHub's API on a local server."""
    # Under /tmp with 0755 so the per-app uids that fetch and build can read the repositories.
    root = Path(tempfile.mkdtemp(prefix="phemeral-gh-"))
    root.chmod(0o755)
    (root / "repos").mkdir(mode=0o755)
    github = start_fake_github()
    env = {"PHEMERAL_GITHUB_API_URL": github.url, "PHEMERAL_BUILD_TIMEOUT": "240"}
    server = Server(root / "data", database_url, env=env, args=["--allow-local-repos"])
    server.github, server.repos = github, root / "repos"
    try:
        yield server.start()
    finally:
        server.stop(timeout=15)
        github.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    """The same server on a PostgreSQL database of its own (dropped afterwards)."""
    with pg_database("phemeral_github_") as url, running_server(url) as srv:
        yield srv


def make_repo(server: Server, name: str) -> tuple[Path, list[str]]:
    """A repository with two commits of a small FastAPI app, answering its version."""
    repo = init_repo(server.repos / name)
    files = {p.name: p.read_text() for p in APP.iterdir() if p.is_file()}
    shas = []
    for version in ("v1", "v2"):
        files["main.py"] = files["main.py"].replace('{"hello": "uv"}', '{"version": "VERSION"}')
        files["main.py"] = files["main.py"].replace("VERSION", version)
        shas.append(commit(server.repos / name, files, f"release {version}"))
        files["main.py"] = files["main.py"].replace(version, "VERSION")
    return repo, shas


def create_project(server: Server, name: str, repo: Path, secret: str) -> None:
    response = server.api(
        "POST", "/projects", json={"name": name, "repo_url": str(repo), "webhook_secret": secret}
    )
    assert response.status_code == 201, response.text
    assert response.json()["webhook_secret"] == secret


def two_pushes(repo: Path, shas: list[str]) -> list[bytes]:
    pushed = int(time.time())
    return [
        push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo), pushed_at=pushed - 10),
        push_body(repo, before=shas[0], after=shas[1], clone_url=str(repo), pushed_at=pushed),
    ]


def served_version(server: Server, project: str) -> str:
    """What the environment domain serves, through the router of `phemeral serve`."""
    host = {"Host": f"{project}-production.phemeral.localhost"}
    response = httpx.get(f"{server.url}/", headers=host, timeout=60)
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def test_two_pushes_in_order_delivered_twice(server: Server) -> None:
    repo, shas = make_repo(server, "inorder")
    create_project(server, "inorder", repo, "secret-in-order")
    patched = server.api("PATCH", "/projects/inorder", json={"repo_token": TOKEN})
    assert patched.status_code == 200, patched.text
    assert TOKEN not in patched.text
    bodies = two_pushes(repo, shas)
    guids = ["11111111-aaaa-4000-8000-000000000001", "11111111-aaaa-4000-8000-000000000002"]

    # Answered once stored, before the build runs (bench/webhook.py times the answers).
    first = [
        server.deliver("secret-in-order", b, delivery=g) for b, g in zip(bodies, guids, strict=True)
    ]
    assert [r.status_code for r in first] == [201, 201], [r.text for r in first]
    ids = [r.json()["deployments"][0]["id"] for r in first]
    assert len(set(ids)) == 2

    again = [
        server.deliver("secret-in-order", b, delivery=g) for b, g in zip(bodies, guids, strict=True)
    ]
    assert [r.status_code for r in again] == [200, 200]
    assert [r.json()["deployments"][0]["id"] for r in again] == ids
    assert all(r.json()["status"] == "duplicate" for r in again)

    done = [server.wait(i) for i in ids]
    assert [d["status"] for d in done] == ["successful", "successful"], done
    for d, sha in zip(done, shas, strict=True):
        assert d["commit"] == sha
        assert d["trigger"]["kind"] == "push"
        assert d["trigger"]["branch"] == "main"
        assert d["trigger"]["pusher"] == "octocat"
    assert [d["trigger"]["delivery_id"] for d in done] == guids
    assert len(server.deployments("inorder")) == 2
    assert server.current("inorder") == ids[1]
    assert served_version(server, "inorder") == "v2"

    # Commit statuses reached the (local) GitHub statuses endpoint: pending, then success.
    deadline = time.monotonic() + 20
    while len(server.github.statuses()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    sent = server.github.statuses()
    seen = {(r.path.rsplit("/", 1)[1], r.body["state"]) for r in sent}
    assert seen == {(sha, state) for sha in shas for state in ("pending", "success")}
    for r in sent:
        assert r.path.startswith("/repos/octo/hello/statuses/")
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert r.body["target_url"].startswith(("http://" + ids[0], "http://" + ids[1]))
    assert TOKEN not in server.log.read_text()


def test_reverse_order_keeps_the_newer_commit_current(server: Server) -> None:
    repo, shas = make_repo(server, "reverse")
    create_project(server, "reverse", repo, "secret-reverse")
    older, newer = two_pushes(repo, shas)

    newer_id = server.deliver("secret-reverse", newer).json()["deployments"][0]["id"]
    older_id = server.deliver("secret-reverse", older).json()["deployments"][0]["id"]
    done = {i: server.wait(i) for i in (newer_id, older_id)}
    assert all(d["status"] == "successful" for d in done.values()), done
    assert server.current("reverse") == newer_id
    older_view = server.api("GET", f"/deployments/{older_id}").json()
    assert older_view["is_current"] is False
    assert older_view["status"] == "successful"
    assert served_version(server, "reverse") == "v2"

    # The older one stays promotable by hand (a rollback).
    promoted = server.api("POST", f"/deployments/{older_id}/promote", json={"reason": "rollback"})
    assert promoted.status_code == 200, promoted.text
    assert server.current("reverse") == older_id
    assert served_version(server, "reverse") == "v1"


def build_lines(server: Server, deployment_id: str) -> list[str]:
    page = server.api("GET", f"/deployments/{deployment_id}/logs/build", params={"limit": 500})
    assert page.status_code == 200, page.text
    return [line["message"] for line in page.json()["lines"]]


def without_push_time(body: bytes) -> bytes:
    payload = json.loads(body)
    del payload["repository"]["pushed_at"]
    return json.dumps(payload).encode()


@pytest.mark.parametrize("clock", ["no-pushed-at", "same-second"])
def test_a_late_parent_push_never_overtakes_its_child(server: Server, clock: str) -> None:
    """The older push arrives after the newer one is current. Its `after` is the current push's
    `before`; without push times, or within the same second, only the commit graph can tell."""
    name = f"late-{clock}"
    repo, shas = make_repo(server, name)
    create_project(server, name, repo, f"secret-{name}")
    now = int(time.time())
    older = push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo), pushed_at=now)
    newer = push_body(repo, before=shas[0], after=shas[1], clone_url=str(repo), pushed_at=now)
    if clock == "no-pushed-at":
        older, newer = without_push_time(older), without_push_time(newer)

    newer_id = server.deliver(f"secret-{name}", newer).json()["deployments"][0]["id"]
    assert server.wait(newer_id)["status"] == "successful"
    assert server.current(name) == newer_id
    older_id = server.deliver(f"secret-{name}", older).json()["deployments"][0]["id"]
    assert server.wait(older_id)["status"] == "successful"

    assert server.current(name) == newer_id, build_lines(server, older_id)[-6:]
    assert served_version(server, name) == "v2"
    assert any("is an ancestor of the current commit" in m for m in build_lines(server, older_id))


def test_a_force_push_to_an_unrelated_history_takes_over(server: Server) -> None:
    repo, shas = make_repo(server, "forced")
    create_project(server, "forced", repo, "secret-forced")
    first = push_body(repo, before=ZERO, after=shas[1], clone_url=str(repo))
    first_id = server.deliver("secret-forced", first).json()["deployments"][0]["id"]
    assert server.wait(first_id)["status"] == "successful"

    # A new root commit (rewritten history) pushed over main with --force.
    git(repo, "checkout", "-q", "--orphan", "rewritten")
    files = {p.name: p.read_text() for p in APP.iterdir() if p.is_file()}
    files["main.py"] = files["main.py"].replace('{"hello": "uv"}', '{"version": "rewritten"}')
    orphan = commit(repo, files, "rewritten history")
    body = push_body(
        repo, before=shas[1], after=orphan, clone_url=str(repo), pushed_at=int(time.time()) + 5
    )
    payload = json.loads(body)
    payload["forced"] = True
    forced_id = server.deliver("secret-forced", json.dumps(payload).encode()).json()
    forced_id = forced_id["deployments"][0]["id"]
    assert server.wait(forced_id)["status"] == "successful"
    assert server.current("forced") == forced_id
    assert served_version(server, "forced") == "rewritten"
    lines = build_lines(server, forced_id)
    assert any("unrelated" in m and "the later push wins" in m for m in lines), lines


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_concurrent_identical_deliveries_create_one_deployment(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server: Server = request.getfixturevalue("server" if backend == "sqlite" else "pg_server")
    repo, shas = make_repo(server, "concurrent")
    create_project(server, "concurrent", repo, "secret-concurrent")
    # A commit the repository does not have: the deployment is created, its build fails fast.
    missing = "d" * 40
    body = push_body(repo, before=shas[1], after=missing, clone_url=str(repo))
    guid = "22222222-bbbb-4000-8000-000000000001"
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(lambda _: server.deliver("secret-concurrent", body, delivery=guid), range(10))
        )
    assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [r.text for r in answers]
    assert len({r.json()["deployments"][0]["id"] for r in answers}) == 1
    [deployment] = server.deployments("concurrent")
    done = server.wait(deployment["id"])
    assert done["status"] == "failed"
    assert missing[:12] in (done["failure_reason"] or "")
    assert server.current("concurrent") is None


def test_forged_and_modified_deliveries_are_refused(server: Server) -> None:
    repo, shas = make_repo(server, "forged")
    create_project(server, "forged", repo, "secret-forged")
    body = push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo))
    genuine = headers("secret-forged", body)
    url = f"{server.url}/api/webhooks/github"

    forged = headers("not-the-secret", body)
    modified = body.replace(shas[0].encode(), shas[1].encode())
    assert modified != body
    unsigned = {k: v for k, v in genuine.items() if k != "X-Hub-Signature-256"}
    sha1_only = {**unsigned, "X-Hub-Signature": "sha1=" + "0" * 40}
    upper = {**genuine, "X-Hub-Signature-256": genuine["X-Hub-Signature-256"].upper()}
    cases = [
        (body, forged),
        (modified, genuine),  # a captured delivery replayed with a changed body
        (body, unsigned),
        (body, sha1_only),
        (body, upper),
    ]
    for content, sent in cases:
        response = httpx.post(url, content=content, headers=sent, timeout=30)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
    assert server.deployments("forged") == []


def test_deliveries_that_deploy_nothing(server: Server) -> None:
    repo, shas = make_repo(server, "quiet")
    create_project(server, "quiet", repo, "secret-quiet")
    url = f"{server.url}/api/webhooks/github"

    def deliver(body: bytes, event: str = "push") -> httpx.Response:
        return server.deliver("secret-quiet", body, event=event)

    ping = deliver(b'{"zen": "Design for failure.", "hook_id": 1}', event="ping")
    assert ping.status_code == 200
    assert ping.json()["status"] == "pong"
    assert "quiet" in ping.json()["projects"]

    for body, event, why in [
        (
            push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo), branch="feature"),
            "push",
            "not mapped",
        ),
        (push_body(repo, before=shas[0], after=ZERO, clone_url=str(repo)), "push", "deleted"),
        (
            push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo), ref="refs/tags/v1"),
            "push",
            "tag push",
        ),
        (b'{"action": "opened"}', "issues", "not handled"),
        (
            push_body(repo, before=ZERO, after=shas[0], full_name="octo/elsewhere"),
            "push",
            "not the repository",
        ),
    ]:
        response = deliver(body, event)
        assert response.status_code == 202, response.text
        assert why in response.json()["reason"]

    invalid = deliver(b"{this is not json")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_payload"

    huge = b"x" * (25 * 1024 * 1024 + 1)
    too_big = httpx.post(url, content=huge, headers=headers("secret-quiet", b"{}"), timeout=60)
    assert too_big.status_code == 413
    assert server.deployments("quiet") == []


def test_projects_sharing_a_repository_each_verify_their_own_secret(server: Server) -> None:
    repo, shas = make_repo(server, "shared")
    create_project(server, "shared-a", repo, "secret-shared-a")
    create_project(server, "shared-b", repo, "secret-shared-b")
    assert server.api("PATCH", "/projects/shared-b", json={"repo_token": TOKEN}).status_code == 200
    missing = "e" * 40  # the builds fail fast; only who gets a deployment matters here
    body = push_body(repo, before=shas[1], after=missing, clone_url=str(repo))

    answer = server.deliver("secret-shared-b", body)
    assert answer.status_code == 201, answer.text
    assert [d["project"] for d in answer.json()["deployments"]] == ["shared-b"]
    assert server.deployments("shared-a") == []
    assert len(server.deployments("shared-b")) == 1

    # `?project=` narrows the secrets tried to one project: the other's signature is refused.
    narrowed = httpx.post(
        f"{server.url}/api/webhooks/github?project=shared-a",
        content=body,
        headers=headers("secret-shared-b", body),
        timeout=30,
    )
    assert narrowed.status_code == 401
    assert server.deployments("shared-a") == []
    [deployment] = server.deployments("shared-b")
    assert server.wait(deployment["id"])["status"] == "failed"

    # The failed build is reported to GitHub as a failure, with the deployment as its target.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sent = [r for r in server.github.statuses() if r.path.endswith(missing)]
        if any(r.body["state"] == "failure" for r in sent):
            break
        time.sleep(0.2)
    assert [r.body["state"] for r in sent] == ["pending", "failure"]
    port = server.url.rsplit(":", 1)[1]
    assert sent[1].body["target_url"] == f"http://{deployment['id']}.phemeral.localhost:{port}"
    assert (
        sent[1]
        .body["description"]
        .startswith(f"Deployment {deployment['id']} to production failed")
    )


@pytest.mark.postgres
def test_database_down_answers_5xx_and_a_redelivery_then_deploys(pg_server: Server) -> None:
    """W5: an event that cannot be stored is a 5xx (GitHub shows it; it can be redelivered)."""
    import psycopg

    server = pg_server
    repo, shas = make_repo(server, "dbdown")
    create_project(server, "dbdown", repo, "secret-dbdown")
    missing = "f" * 40  # the build fails fast; only the record matters here
    body = push_body(repo, before=shas[1], after=missing, clone_url=str(repo))
    guid = "33333333-cccc-4000-8000-000000000001"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{server.database}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (server.database,),
        )
        try:
            down = server.deliver("secret-dbdown", body, delivery=guid)
        finally:
            admin.execute(f'ALTER DATABASE "{server.database}" ALLOW_CONNECTIONS true')
    assert down.status_code == 503, down.text
    assert down.headers.get("retry-after")

    again = server.deliver("secret-dbdown", body, delivery=guid)
    assert again.status_code == 201, again.text
    [deployment] = server.deployments("dbdown")
    assert deployment["id"] == again.json()["deployments"][0]["id"]
    server.wait(deployment["id"])
