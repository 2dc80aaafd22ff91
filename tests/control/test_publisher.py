"""A new building deployment's route is published after it is stored, off the caller's path:
every request reaches the listeners (coalesced), in order, and a failed publish is tried again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from phemeral import deploys
from phemeral.deploys import ControlPlane, Publisher, Trigger
from phemeral.errors import StoreUnavailable
from phemeral.models import DeploymentStatus, RoutingSnapshot, TriggerKind
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter


def open_cp(data: Path) -> ControlPlane:
    store = Store.connect(f"sqlite:///{data / 'phemeral.db'}")
    migrate(store)
    return ControlPlane(
        settings=Settings(data_dir=data, allow_local_repos=True),
        store=store,
        box=SecretBox.open(data),
        logs=LogWriter(store, runtime_log_cap=1000),
    )


def push(n: int) -> Trigger:
    return Trigger(
        kind=TriggerKind.PUSH,
        actor="test",
        commit=f"{n:040x}",
        branch="main",
        delivery_id=f"delivery-{n}",
    )


def test_pushes_reach_the_listeners_after_they_are_stored(tmp_path: Path) -> None:
    cp = open_cp(tmp_path)
    deploys.create_project(cp, "shop", repo_url=str(tmp_path))
    received: list[RoutingSnapshot] = []
    cp.listeners.append(received.append)

    async def scenario() -> list[str]:
        publisher = cp.publisher = Publisher(cp, coalesce=0)
        try:
            ids = []
            for n in range(5):  # from worker threads, as the webhook handler does
                d, created = await asyncio.to_thread(
                    deploys.create_deployment, cp, "shop", "production", push(n)
                )
                assert created
                ids.append(d.id)
            await publisher.flush()
            return ids
        finally:
            await publisher.close()

    ids = asyncio.run(scenario())
    last = received[-1]
    assert all(last.deployments[i].status is DeploymentStatus.BUILDING for i in ids)


def test_a_burst_of_requests_is_one_publish(tmp_path: Path) -> None:
    cp = open_cp(tmp_path)
    received: list[RoutingSnapshot] = []
    cp.listeners.append(received.append)

    async def scenario() -> None:
        publisher = Publisher(cp, coalesce=0)
        try:
            for _ in range(5):
                publisher.request()
            await publisher.flush()
            publisher.request()  # one after that publish: another one
            await publisher.flush()
        finally:
            await publisher.close()

    asyncio.run(scenario())
    assert len(received) == 2


def test_a_failed_publish_is_tried_again(tmp_path: Path) -> None:
    cp = open_cp(tmp_path)
    deploys.create_project(cp, "shop", repo_url=str(tmp_path))
    failures = [StoreUnavailable("the database is restarting")]
    received: list[RoutingSnapshot] = []

    def flaky(snapshot: RoutingSnapshot) -> None:
        received.append(snapshot)

    real = deploys.routing.routing_snapshot

    def once_unavailable(*args: object, **kwargs: object) -> RoutingSnapshot:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    cp.listeners.append(flaky)

    async def scenario() -> str:
        publisher = cp.publisher = Publisher(cp, coalesce=0)
        try:
            deploys.routing.routing_snapshot = once_unavailable  # type: ignore[assignment]
            d, _ = await asyncio.to_thread(
                deploys.create_deployment, cp, "shop", "production", push(1)
            )
            await publisher.flush()
            return d.id
        finally:
            deploys.routing.routing_snapshot = real
            await publisher.close()

    deployment_id = asyncio.run(scenario())
    assert not failures
    assert deployment_id in received[-1].deployments


def test_concurrent_publishes_reach_the_listeners_in_the_order_they_were_read(
    tmp_path: Path,
) -> None:
    cp = open_cp(tmp_path)
    deploys.create_project(cp, "shop", repo_url=str(tmp_path))
    received: list[int] = []
    cp.listeners.append(lambda snapshot: received.append(len(snapshot.deployments)))
    cp.publisher = None  # every creation publishes at once, in its own thread

    def create(n: int) -> None:
        deploys.create_deployment(cp, "shop", "production", push(n))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert received == sorted(received)  # never an older table after a newer one
    assert received[-1] == 8
