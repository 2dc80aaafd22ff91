"""GitHub App installation tokens end to end: a real `phemeral serve` started with the server's
App (``--github-app-id --github-app-key-file``), real builds, and the local fake of GitHub's API,
which checks the App's JWT signature, issues installation tokens and refuses expired, revoked or
unknown ones; it also serves a repository over git's smart HTTP to the installation token only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .fake_github import BAD_JWT, FakeGitHub, Recorded, start_fake_github
from .gitrepo import git, init_repo, pull_request_body, push_body
from .test_previews import version_commit
from .test_push_to_deploy import ZERO, Server, create_project, make_repo

pytestmark = pytest.mark.slow

APP_ID = 4242
INSTALLATION = 777


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@contextlib.contextmanager
def app_server() -> Iterator[tuple[Server, rsa.RSAPrivateKey]]:
    """The platform with the server's GitHub App; builds share the host's network so they
    reach the fake's git endpoint on 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="phemeral-app-"))
    root.chmod(0o755)
    (root / "repos").mkdir(mode=0o755)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = root / "app.pem"
    key_file.write_text(pem(key))
    key_file.chmod(0o600)
    github = start_fake_github()
    github.register_app(APP_ID, key.public_key(), {INSTALLATION: "octo/hello"})
    env = {
        "PHEMERAL_GITHUB_API_URL": github.url,
        "PHEMERAL_BUILD_TIMEOUT": "240",
        "PHEMERAL_NETWORK": "host",
    }
    args = ["--allow-local-repos", "--github-app-id", str(APP_ID)]
    args += ["--github-app-key-file", str(key_file)]
    server = Server(root / "data", None, env=env, args=args)
    server.github, server.repos = github, root / "repos"
    try:
        yield server.start(), key
    finally:
        server.stop(timeout=15)
        github.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Server, rsa.RSAPrivateKey]]:
    with app_server() as pair:
        yield pair


@pytest.fixture
def server(served: tuple[Server, rsa.RSAPrivateKey]) -> Server:
    return served[0]


@pytest.fixture
def github(server: Server) -> FakeGitHub:
    return server.github


def bearer(r: Recorded) -> str:
    scheme, _, token = r.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def wait_for(count: int, what: Any) -> list[Recorded]:
    """What the fake recorded, once it has ``count`` of them (bounded; reports are async)."""
    deadline = time.monotonic() + 30
    while len(what()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    recorded: list[Recorded] = what()
    return recorded


def build_log(server: Server, deployment_id: str) -> list[str]:
    lines = server.api("GET", f"/deployments/{deployment_id}/logs/build").json()["lines"]
    return [f"{line['stage']}: {line['message']}" for line in lines]


def no_token_anywhere(server: Server, tokens: list[str]) -> None:
    """No issued token in the platform log, nor in any file of the data dir (database, git
    config of a checkout, release, build log)."""
    needles = [t.encode() for t in tokens]
    assert not any(n in server.log.read_bytes() for n in needles)
    for path in server.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                assert not any(n in data for n in needles), path


def private_repo(server: Server, github: FakeGitHub) -> tuple[Path, list[str], str]:
    """octo/hello served by the fake over git's smart HTTP (made once per server)."""
    work = server.repos / "private-work"
    bare = server.repos.parent / "git" / "octo" / "hello.git"
    if not bare.exists():
        make_repo(server, "private-work")
        bare.parent.mkdir(parents=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        github.serve_git(server.repos.parent / "git")
    shas = git(work, "rev-list", "--reverse", "HEAD").split()
    return work, shas, f"{github.url}/git/octo/hello.git"


def test_a_private_fetch_and_statuses_with_tokens_renewed_at_every_use(
    server: Server, github: FakeGitHub
) -> None:
    """Tokens GitHub issues for 2 minutes are inside the 5-minute margin: every use renews."""
    assert github.app is not None
    github.app.token_seconds = 120
    work, shas, url = private_repo(server, github)
    anonymous = subprocess.run(
        ["git", "ls-remote", url],
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    assert anonymous.returncode != 0  # private: nothing without a token
    created = server.api(
        "POST",
        "/projects",
        json={"name": "private", "repo_url": url, "webhook_secret": "secret-private"},
    )
    assert created.status_code == 201, created.text
    # The repository is not on github.com, so the installation is named (with the CLI).
    done = server.cli("projects", "set", "private", "--github-installation-id", str(INSTALLATION))
    assert done.returncode == 0, done.stderr
    shown = server.api("GET", "/projects/private").json()
    assert shown["github_app"] == {
        "app_id": APP_ID,
        "source": "server",
        "installation_id": INSTALLATION,
    }

    body = push_body(work, before=ZERO, after=shas[1], clone_url=url)
    [item] = server.deliver("secret-private", body).json()["deployments"]
    finished = server.wait(item["id"])
    log = build_log(server, item["id"])
    assert finished["status"] == "successful", (finished, log)
    assert f"source: fetching with the project's GitHub App {APP_ID} installation token" in log

    # git read the repository with an installation token as HTTP Basic x-access-token.
    fetches = [r for r in github.requests if r.path.startswith("/git/octo/hello.git/")]
    assert fetches[0].body == {"refusal": "Bad credentials"}  # the anonymous ls-remote
    assert fetches[1:] and all(r.body == {"refusal": None} for r in fetches[1:])
    assert all(r.headers["authorization"].startswith("Basic ") for r in fetches[1:])
    statuses = wait_for(2, github.statuses)
    assert [s.body["state"] for s in statuses] == ["pending", "success"]
    tokens = [bearer(s) for s in statuses]
    issued = github.issued_tokens()
    assert all(t in issued for t in tokens)
    assert tokens[0] != tokens[1]  # the final status got a fresh one
    assert len(github.token_requests()) >= 2  # pending (perhaps with the fetch), success
    no_token_anywhere(server, issued)


def test_a_preview_reuses_a_long_lived_token_and_renews_a_revoked_one(
    server: Server, github: FakeGitHub
) -> None:
    """The server's App, its installation asked of GitHub for the payload's repository."""
    assert github.app is not None
    github.app.token_seconds = 3600
    repo = init_repo(server.repos / "pv")
    version_commit(repo, "main")
    git(repo, "checkout", "-q", "-b", "feature")
    heads = [version_commit(repo, f"head{i}") for i in (1, 2)]
    create_project(server, "pv", repo, "secret-pv")
    before_statuses, before_comments = len(github.statuses()), len(github.comments())
    before_tokens = len(github.token_requests())

    body = pull_request_body("opened", 7, head_sha=heads[0], clone_url=str(repo))
    [item] = server.deliver("secret-pv", body, event="pull_request").json()["deployments"]
    assert server.wait(item["id"])["status"] == "successful"
    statuses = wait_for(before_statuses + 2, github.statuses)[before_statuses:]
    comments = wait_for(before_comments + 2, github.comments)[before_comments:]
    assert [s.body["state"] for s in statuses] == ["pending", "success"]
    assert [c.method for c in comments] == ["POST", "PATCH"]
    used = {bearer(r) for r in statuses + comments}
    assert len(used) == 1  # one token, four uses
    assert len(github.token_requests()) - before_tokens <= 1
    lookups = [r.path for r in github.requests if r.path.endswith("/installation")]
    assert lookups == ["/repos/octo/hello/installation"]

    # GitHub revokes it: the next report is refused once (401), then sent with a fresh one.
    [revoked] = used
    github.revoke(revoked)
    body = pull_request_body("synchronize", 7, head_sha=heads[1], clone_url=str(repo))
    [item] = server.deliver("secret-pv", body, event="pull_request").json()["deployments"]
    assert server.wait(item["id"])["status"] == "successful"
    later = wait_for(before_statuses + 5, github.statuses)[before_statuses + 2 :]
    assert bearer(later[0]) == revoked
    assert [s.body["state"] for s in later[1:]] == ["pending", "success"]
    assert {bearer(s) for s in later[1:]} == {github.issued_tokens()[-1]} != {revoked}
    assert not any(line.startswith("github:") for line in build_log(server, item["id"]))
    no_token_anywhere(server, github.issued_tokens())


def test_a_wrong_key_is_said_in_the_log_and_loses_nothing(
    server: Server, github: FakeGitHub, served: tuple[Server, rsa.RSAPrivateKey]
) -> None:
    """The project's own App with a key GitHub does not know: the deployment still builds and
    goes live; the build log says what GitHub answered; fixing the key needs no redelivery."""
    repo, shas = make_repo(server, "wrongkey")
    create_project(server, "wrongkey", repo, "secret-wrong")
    other = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    patched = server.api(
        "PATCH",
        "/projects/wrongkey",
        json={"github_app_id": APP_ID, "github_app_key": other, "github_installation_id": 777},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["github_app"]["source"] == "project"
    before = len(github.statuses())

    body = push_body(repo, before=ZERO, after=shas[0], clone_url=str(repo))
    [item] = server.deliver("secret-wrong", body).json()["deployments"]
    assert server.wait(item["id"])["status"] == "successful"
    assert server.current("wrongkey") == item["id"]
    expected = (
        f"GitHub App {APP_ID} installation {INSTALLATION}: GitHub refused an access token: "
        f"HTTP 401: {BAD_JWT}"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refused = [line for line in build_log(server, item["id"]) if line.startswith("github:")]
        if len(refused) == 2:
            break
        time.sleep(0.2)
    assert refused == [
        f"github: commit status pending not reported: {expected}",
        f"github: commit status success not reported: {expected}",
    ]
    assert [s for s in github.statuses()[before:] if shas[0] in s.path] == []
    text = server.log.read_text()
    assert other not in text and expected in text

    # The right key: the next push reports again, with nothing redelivered by hand.
    right = pem(served[1])
    assert server.api("PATCH", "/projects/wrongkey", json={"github_app_key": right}).is_success
    body = push_body(repo, before=shas[0], after=shas[1], clone_url=str(repo))
    [item] = server.deliver("secret-wrong", body).json()["deployments"]
    assert server.wait(item["id"])["status"] == "successful"
    sent = wait_for(before + 2, github.statuses)[before:]
    assert [s.body["state"] for s in sent] == ["pending", "success"]
    assert all(shas[1] in s.path for s in sent)


def test_app_settings_are_checked_and_the_key_never_returned(server: Server) -> None:
    create_project(server, "checked", server.repos, "secret-checked")
    cases = [
        ({"github_app_id": "abc"}, "GitHub App id must be a positive whole number"),
        ({"github_installation_id": "12x"}, "GitHub installation id must be a positive whole"),
        ({"github_app_key": "not a key"}, "the GitHub App private key is not PEM"),
        ({"github_app_id": 5}, "needs both its id and its private key"),
    ]
    for change, message in cases:
        refused = server.api("PATCH", "/projects/checked", json=change)
        assert refused.status_code == 422, refused.text
        assert message in refused.json()["error"]["message"]
    key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ok = server.api("PATCH", "/projects/checked", json={"github_app_id": 5, "github_app_key": key})
    assert ok.status_code == 200, ok.text
    listing = server.api("GET", "/projects").text + server.api("GET", "/projects/checked").text
    assert "PRIVATE KEY" not in listing and key.splitlines()[1] not in listing
    assert ok.json()["github_app"] == {"app_id": 5, "source": "project", "installation_id": None}

    bad = server.cli("projects", "set", "checked", "--github-app-id", "twelve")
    assert bad.returncode == 2 and "GitHub App id must be a positive whole number" in bad.stderr
    shown = server.cli("projects", "show", "checked")
    assert "GitHub App 5 (its own), installation asked of GitHub" in shown.stdout
    cleared = server.cli("projects", "set", "checked", "--clear-github-app")
    assert cleared.returncode == 0, cleared.stderr
    after = server.api("GET", "/projects/checked").json()["github_app"]
    assert after == {"app_id": APP_ID, "source": "server", "installation_id": None}


def test_serve_refuses_an_unreadable_app_key(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    base = Server(tmp_path / "data").argv()
    for extra, message in (
        (
            ["--github-app-id", "1", "--github-app-key-file", str(key_file)],
            f"{key_file}: the GitHub App private key is not a usable PEM key",
        ),
        (["--github-app-id", "1"], "--github-app-id and --github-app-key-file go together"),
    ):
        done = subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr


def test_a_private_fetch_without_a_token_fails_with_githubs_answer(
    server: Server, github: FakeGitHub
) -> None:
    work, shas, url = private_repo(server, github)
    wrong = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    created = server.api(
        "POST",
        "/projects",
        json={"name": "locked", "repo_url": url, "webhook_secret": "secret-locked"},
    )
    assert created.status_code == 201, created.text
    change = {"github_app_id": APP_ID, "github_app_key": wrong, "github_installation_id": 777}
    assert server.api("PATCH", "/projects/locked", json=change).is_success

    body = push_body(work, before=ZERO, after=shas[0], clone_url=url)
    [item] = server.deliver("secret-locked", body).json()["deployments"]
    failed = server.wait(item["id"])
    answer = (
        f"GitHub App {APP_ID} installation {INSTALLATION}: GitHub refused an access token: "
        f"HTTP 401: {BAD_JWT}"
    )
    assert failed["status"] == "failed"
    assert failed["failure_reason"].startswith(f"could not fetch commit {shas[0][:12]} of {url}")
    assert failed["failure_reason"].endswith(f"(without a GitHub token: {answer})")
    assert f"source: fetching without a GitHub token: {answer}" in build_log(server, item["id"])
