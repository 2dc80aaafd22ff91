"""Git sources: an exact commit, fetched sandboxed; local repositories only when allowed."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from buildkit import APP_UID, FIXTURES, ListLog

from phemeral.build.git import check_source
from phemeral.build.pipeline import build
from phemeral.errors import BuildError, SourceError
from phemeral.models import BuildJob, GitSource, ProjectOverrides
from phemeral.settings import Settings

SHA = "a" * 40


def _repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "origin"
    shutil.copytree(FIXTURES / "pip_flask_factory", repo)
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    first = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    init = repo / "shop" / "__init__.py"
    init.write_text(init.read_text().replace('"shop"', '"second"'))
    subprocess.run([*git, "commit", "-qam", "second"], check=True)
    second = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return repo, first, second


def _job(settings: Settings, source: GitSource) -> BuildJob:
    deployment_id = f"git-{uuid.uuid4().hex[:8]}"
    return BuildJob(
        deployment_id=deployment_id,
        project="gitproj",
        environment="production",
        source=source,
        overrides=ProjectOverrides(),
        custom_start_command=None,
        env={},
        release_dir=settings.data_dir / "apps" / "gitproj" / "releases" / deployment_id,
        uid=APP_UID if os.geteuid() == 0 else None,
    )


@pytest.mark.parametrize(
    ("url", "commit", "message"),
    [
        ("https://github.com/a/b.git", "main", "not a full hexadecimal"),
        ("https://user:pw@github.com/a/b.git", SHA, "must not carry credentials"),
        ("ssh://git@github.com/a/b.git", SHA, "only https"),
        ("/srv/repo", SHA, "local repositories are disabled"),
        ("file:///srv/repo", SHA, "local repositories are disabled"),
        ("--upload-pack=evil", SHA, "not valid"),
    ],
)
def test_check_source_refuses(url: str, commit: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        check_source(GitSource(url=url, commit=commit), allow_local=False)


@pytest.mark.slow
def test_builds_the_exact_commit_and_hides_the_token(tmp_path: Path, settings: Settings) -> None:
    repo, first, _second = _repo(tmp_path)
    allowed = replace(settings, allow_local_repos=True)
    token = "ghs_" + uuid.uuid4().hex
    job = _job(allowed, GitSource(url=f"file://{repo}", commit=first, token=token))
    log = ListLog()
    result = asyncio.run(build(job, log, allowed))
    src = result.release.path / "src"
    assert '"shop"' in (src / "shop" / "__init__.py").read_text()  # the first commit, not HEAD
    assert token not in log.text()
    assert not (result.release.path / ".git-fetch").exists()  # the token file is gone
    if os.geteuid() == 0:
        assert (src / "shop").stat().st_uid == APP_UID  # fetched as the app uid


def test_local_repository_refused_by_default(tmp_path: Path, settings: Settings) -> None:
    repo, first, _ = _repo(tmp_path)
    job = _job(settings, GitSource(url=str(repo), commit=first))
    with pytest.raises(BuildError, match="local repositories are disabled") as caught:
        asyncio.run(build(job, ListLog(), settings))
    assert caught.value.stage == "source"


def test_unknown_commit_fails_clearly(tmp_path: Path, settings: Settings) -> None:
    repo, _, _ = _repo(tmp_path)
    allowed = replace(settings, allow_local_repos=True)
    job = _job(allowed, GitSource(url=f"file://{repo}", commit="b" * 40))
    with pytest.raises(BuildError, match="could not fetch commit bbbbbbbbbbbb") as caught:
        asyncio.run(build(job, ListLog(), allowed))
    assert caught.value.stage == "source"
    assert not job.release_dir.exists()
