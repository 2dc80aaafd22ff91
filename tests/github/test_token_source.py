"""The one source of a project's GitHub token, in process (SQLite, the local fake of GitHub's
API): which credential wins, and what the builder's job carries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from phemeral.deploys import create_project, update_project
from phemeral.deploys.github_auth import github_auth
from phemeral.deploys.lifecycle import Trigger, create_deployment, run_build
from phemeral.deploys.plane import ControlPlane
from phemeral.errors import BuildError, InvalidInput, SourceError
from phemeral.github.repository import hosted_full_name
from phemeral.github.tokens import InstallationAuth, StaticToken
from phemeral.models import BuildJob, BuildLog, BuildResult, DeploymentStatus, TriggerKind
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter
from phemeral.store.schema import Project

from .fake_github import FakeGitHub, start_fake_github

SERVER_APP, PROJECT_APP, INSTALLATION = 11, 22, 777


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def github(key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = start_fake_github()
    fake.register_app(PROJECT_APP, key.public_key(), {INSTALLATION: "octo/hello"})
    yield fake
    fake.close()


def control_plane(tmp_path: Path, github: FakeGitHub, server_key: str | None) -> ControlPlane:
    data = tmp_path / "data"
    data.mkdir()
    store = Store.connect(f"sqlite:///{data / 'phemeral.db'}")
    migrate(store)
    settings = Settings(data_dir=data, github_api_url=github.url)
    if server_key is not None:
        (tmp_path / "app.pem").write_text(server_key)
        settings = replace(
            settings, github_app_id=SERVER_APP, github_app_key_file=tmp_path / "app.pem"
        )
    return ControlPlane(
        settings=settings,
        store=store,
        box=SecretBox.open(data),
        logs=LogWriter(store, runtime_log_cap=1000),
    )


def test_the_most_specific_credential_wins(
    tmp_path: Path, github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    cp = control_plane(tmp_path, github, pem(key))
    create_project(cp, "app", repo_url="https://github.com/octo/hello")

    server = github_auth(cp, "app")  # nothing of its own: the server's App
    assert isinstance(server, InstallationAuth)
    assert (server.app.app_id, server.installation_id, server.full_name) == (
        SERVER_APP,
        None,
        "octo/hello",
    )

    update_project(cp, "app", {"repo_token": "ghp_project"})
    assert github_auth(cp, "app") == StaticToken("ghp_project")

    update_project(cp, "app", {"github_app_id": "22", "github_app_key": pem(key)})
    update_project(cp, "app", {"github_installation_id": INSTALLATION})
    own = github_auth(cp, "app")
    assert isinstance(own, InstallationAuth)
    assert (own.app.app_id, own.installation_id) == (PROJECT_APP, INSTALLATION)
    with cp.store.read() as s:
        project = s.query(Project).one()
        assert project.github_app_key is not None and "PRIVATE KEY" not in project.github_app_key

    update_project(
        cp,
        "app",
        {"github_app_id": None, "github_app_key": None, "github_installation_id": None},
    )
    assert github_auth(cp, "app") == StaticToken("ghp_project")
    update_project(cp, "app", {"repo_token": None})
    assert isinstance(github_auth(cp, "app"), InstallationAuth)


def test_without_a_server_app_an_installation_alone_is_refused(
    tmp_path: Path, github: FakeGitHub
) -> None:
    cp = control_plane(tmp_path, github, None)
    create_project(cp, "app", repo_url="https://github.com/octo/hello")
    assert github_auth(cp, "app") is None
    with pytest.raises(InvalidInput, match="an installation id needs a GitHub App"):
        update_project(cp, "app", {"github_installation_id": 5})
    assert github_auth(cp, "app") is None


def test_the_builder_gets_a_fresh_installation_token_and_a_failed_fetch_drops_it(
    tmp_path: Path, github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    cp = control_plane(tmp_path, github, None)
    create_project(cp, "app", repo_url="https://github.com/octo/hello")
    change = {"github_app_id": PROJECT_APP, "github_app_key": pem(key)}
    update_project(cp, "app", change)  # the installation is asked of GitHub
    jobs: list[BuildJob] = []

    async def builder(job: BuildJob, log: BuildLog, settings: Settings) -> BuildResult:
        jobs.append(job)
        if len(jobs) == 1:
            raise SourceError("could not fetch: Authentication failed")
        raise BuildError("could not fetch: Authentication failed", stage="source")  # as built

    cp.builder = builder
    trigger = Trigger(kind=TriggerKind.PUSH, actor="t", commit="a" * 40, branch="main")

    async def builds() -> list[DeploymentStatus]:
        statuses = []
        for _ in range(3):
            deployment, _ = create_deployment(cp, "app", "production", trigger)
            statuses.append(await run_build(cp, deployment.id))
        return statuses

    assert asyncio.run(builds()) == [DeploymentStatus.FAILED] * 3
    tokens = [job.source.token for job in jobs]  # type: ignore[union-attr]
    assert tokens == github.issued_tokens()  # one each: each was dropped after the failure
    assert len(set(tokens)) == 3
    assert [r.path for r in github.requests if r.path.endswith("/installation")] == [
        "/repos/octo/hello/installation"
    ]


def test_the_installation_is_found_for_a_repository_on_any_github_host(
    tmp_path: Path, github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    """GitHub Enterprise Server: the repository URL's path names it (the builder has no
    payload to ask)."""
    cp = control_plane(tmp_path, github, pem(key))
    create_project(cp, "ghe", repo_url="https://ghe.example.com/octo/hello.git")
    auth = github_auth(cp, "ghe")
    assert isinstance(auth, InstallationAuth) and auth.full_name == "octo/hello"
    assert github_auth(cp, "ghe", full_name="octo/other") == replace(auth, full_name="octo/other")
    assert hosted_full_name("https://ghe.example.com/a/b/c") is None
    assert hosted_full_name("/srv/git/octo/hello") is None
