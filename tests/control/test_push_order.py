"""Push deployments: delivery ids are idempotent; only a newer push moves the pointer.

Runs the use-cases in-process with the real builder fetching commits of a local git repository.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from phemeral import deploys
from phemeral.build.pipeline import build
from phemeral.deploys import ControlPlane, Trigger
from phemeral.models import TriggerKind
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter
from phemeral.store.schema import Deployment, Environment, Promotion

from .serverkit import FASTAPI_APP

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def cp(tmp_path: Path) -> ControlPlane:
    data = tmp_path / "data"
    data.mkdir()
    store = Store.connect(f"sqlite:///{data / 'phemeral.db'}")
    migrate(store)
    settings = Settings(data_dir=data, allow_local_repos=True)
    return ControlPlane(
        settings=settings,
        store=store,
        box=SecretBox.open(data),
        logs=LogWriter(store, runtime_log_cap=1000),
        builder=build,
    )


def test_out_of_order_pushes_and_redeliveries(cp: ControlPlane, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    old_sha = commit(repo, FASTAPI_APP, "first")
    new_sha = commit(repo, {"extra.py": "X = 1\n"}, "second")
    deploys.create_project(cp, "pushy", repo_url=str(repo))

    def push(sha: str, seq: int, delivery: str) -> tuple[Deployment, bool]:
        trigger = Trigger(
            kind=TriggerKind.PUSH,
            actor="github",
            commit=sha,
            branch="main",
            pusher="octocat",
            delivery_id=delivery,
            push_seq=seq,
        )
        return deploys.create_deployment(cp, "pushy", "production", trigger)

    newer, created = push(new_sha, 2, "delivery-2")  # the newer push arrives first
    again, created_again = push(new_sha, 2, "delivery-2")  # GitHub redelivers it
    older, _ = push(old_sha, 1, "delivery-1")
    assert created and not created_again and again.id == newer.id

    assert asyncio.run(deploys.run_build(cp, newer.id)) == "successful"
    assert asyncio.run(deploys.run_build(cp, older.id)) == "successful"  # finishes last

    with cp.store.read() as s:
        env = s.scalars(select(Environment)).one()
        assert env.current_deployment_id == newer.id  # the older push did not take over
        moves = list(s.scalars(select(Promotion)))
        assert [(m.from_deployment_id, m.to_deployment_id, m.actor) for m in moves] == [
            (None, newer.id, "push by octocat")
        ]
        rows = {d.id: d for d in s.scalars(select(Deployment))}
        assert rows[older.id].status == "successful" and rows[older.id].commit_sha == old_sha
        assert len(rows) == 2

    # still promotable by hand (rollback), and then a newer push takes over again
    deploys.promote(cp, older.id, "admin", "rollback")
    third_sha = commit(repo, {"extra.py": "X = 3\n"}, "third")
    third, _ = push(third_sha, 3, "delivery-3")
    assert asyncio.run(deploys.run_build(cp, third.id)) == "successful"
    with cp.store.read() as s:
        assert s.scalars(select(Environment)).one().current_deployment_id == third.id
    cp.store.close()
