"""The build queue bounds concurrency; the log writer never lets one bad batch block the rest."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from phemeral import deploys
from phemeral.build.pipeline import build
from phemeral.deploys import BuildQueue, ControlPlane, Trigger
from phemeral.models import BuildLogLine, TriggerKind
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter
from phemeral.store.schema import BuildLogRow

from .serverkit import NOT_A_PROJECT, tar_gz


def open_cp(data: Path, concurrency: int) -> ControlPlane:
    store = Store.connect(f"sqlite:///{data / 'phemeral.db'}")
    migrate(store)
    return ControlPlane(
        settings=Settings(data_dir=data, build_concurrency=concurrency),
        store=store,
        box=SecretBox.open(data),
        logs=LogWriter(store, runtime_log_cap=1000),
        builder=build,
    )


@pytest.mark.slow
def test_one_build_at_a_time_when_concurrency_is_one(tmp_path: Path) -> None:
    cp = open_cp(tmp_path, concurrency=1)
    deploys.create_project(cp, "queued")

    async def scenario() -> list[str]:
        cp.queue = BuildQueue(cp)
        ids = []
        for n in range(3):
            archive = tmp_path / f"a{n}.tar.gz"
            archive.write_bytes(tar_gz(NOT_A_PROJECT))
            trigger = Trigger(kind=TriggerKind.MANUAL, actor="test")
            d, _ = await asyncio.to_thread(
                deploys.deploy, cp, "queued", "production", trigger, archive=archive
            )
            ids.append(d.id)
        await asyncio.sleep(0.1)
        await cp.queue.wait_idle()
        return ids

    ids = asyncio.run(scenario())
    spans = []
    with cp.store.read() as s:
        for deployment_id in ids:
            lines = list(
                s.scalars(
                    select(BuildLogRow)
                    .where(BuildLogRow.deployment_id == deployment_id)
                    .order_by(BuildLogRow.id)
                )
            )
            assert lines[0].message.startswith("queued")
            started = next(r.timestamp for r in lines if r.message == "build started")
            spans.append((started, lines[-1].timestamp))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # never two builds at once
    cp.store.close()


def test_log_lines_of_a_vanished_deployment_do_not_block_others(tmp_path: Path) -> None:
    cp = open_cp(tmp_path, concurrency=1)
    deploys.create_project(cp, "logs")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz(NOT_A_PROJECT))
    trigger = Trigger(kind=TriggerKind.MANUAL, actor="test")
    d, _ = deploys.create_deployment(cp, "logs", "production", trigger, archive=archive)
    now = datetime.now(UTC)
    cp.logs.add_build(BuildLogLine("gonegonegone", "build", now, "orphan"))
    cp.logs.add_build(BuildLogLine(d.id, "build", now, "kept"))
    cp.logs.flush()
    with cp.store.read() as s:
        messages = list(
            s.scalars(select(BuildLogRow.message).where(BuildLogRow.deployment_id == d.id))
        )
    assert messages[-1] == "kept"
    cp.logs.flush()  # nothing left behind to fail again
    cp.store.close()


# -- fairness ---------------------------------------------------------------------------------


def test_pick_is_oldest_first_one_per_project_within_the_free_slots() -> None:
    from phemeral.deploys.queue import Waiting, pick

    a1, a2, b1, c1 = (Waiting(d, d[0]) for d in ("a1", "a2", "b1", "c1"))
    assert pick([a1, a2, b1, c1], running=(), free=4) == [a1, b1, c1]  # never two of a
    assert pick([a1, a2, b1, c1], running={"a"}, free=4) == [b1, c1]  # a's queue waits
    assert pick([a1, a2, b1, c1], running=(), free=1) == [a1]
    assert pick([a2, b1], running={"b"}, free=0) == []
    assert pick([], running=(), free=3) == []
