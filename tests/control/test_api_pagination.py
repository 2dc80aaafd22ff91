"""Cursor pages stay stable while rows are inserted; runtime logs page, filter and prune."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from phemeral.models import RuntimeLogLine
from phemeral.store import Store
from phemeral.store.logs import LogWriter, prune_runtime_log
from phemeral.store.names import new_deployment_id
from phemeral.store.schema import Deployment, Environment, Project, RuntimeLogRow

from .serverkit import Server, database_uri, unique


def insert_deployments(store: Store, project: str, count: int, at: datetime) -> list[str]:
    """Rows as a burst of pushes would leave them; several share one timestamp on purpose."""
    with store.write() as s:
        proj = s.scalars(select(Project).where(Project.name == project)).one()
        env = s.scalars(select(Environment).where(Environment.project_id == proj.id)).one()
        ids = []
        for i in range(count):
            d = Deployment(
                id=new_deployment_id(),
                project_id=proj.id,
                environment_id=env.id,
                status="failed",
                failure_reason="inserted by the pagination test",
                trigger="manual",
                created_by="test",
                env_snapshot="",
                created_at=at + timedelta(milliseconds=i // 3),
            )
            s.add(d)
            ids.append(d.id)
    return ids


def newest_first(store: Store, ids: list[str]) -> list[str]:
    with store.read() as s:
        rows = s.execute(
            select(Deployment.id)
            .where(Deployment.id.in_(ids))
            .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        )
        return [r[0] for r in rows]


def test_deployment_pages_are_stable_while_inserting(server: Server, api: httpx.Client) -> None:
    name = unique("page")
    api.post("/projects", json={"name": name})
    store = Store.connect(database_uri(server))
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        before = insert_deployments(store, name, 53, start)
        expected = newest_first(store, before)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = api.get(
                f"/projects/{name}/deployments", params={"limit": 10, "cursor": cursor}
            ).json()
            seen += [d["id"] for d in page["items"]]
            pages += 1
            insert_deployments(store, name, 4, datetime.now(UTC))  # newer rows keep arriving
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected and pages == 6
    finally:
        store.close()


def test_bad_cursors_and_limits_are_422(api: httpx.Client) -> None:
    name = unique("cur")
    api.post("/projects", json={"name": name})
    for params in ({"cursor": "garbage!"}, {"cursor": "WzFd"}, {"limit": 0}):
        response = api.get(f"/projects/{name}/deployments", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid_input"


def test_runtime_log_pages_filters_and_cap(server: Server, api: httpx.Client) -> None:
    name = unique("rt")
    api.post("/projects", json={"name": name})
    store = Store.connect(database_uri(server))
    try:
        (deployment_id,) = insert_deployments(store, name, 1, datetime.now(UTC))
        writer = LogWriter(store, runtime_log_cap=10_000)
        t0 = datetime.now(UTC)

        def emit(first: int, count: int) -> None:
            writer.write(
                [
                    RuntimeLogLine(
                        deployment_id,
                        "i1",
                        "stderr" if n % 5 == 0 else "stdout",
                        t0 + timedelta(microseconds=n),
                        f"GET /items/{n}",
                    )
                    for n in range(first, first + count)
                ]
            )
            writer.flush()

        emit(0, 120)
        base = f"/deployments/{deployment_id}/logs/runtime"
        seen: list[str] = []
        cursor = None
        while True:
            page = api.get(base, params={"limit": 25, "cursor": cursor}).json()
            seen += [line["message"] for line in page["lines"]]
            emit(len(seen) + 1000, 3)  # new lines arrive while paging back in time
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"GET /items/{n}" for n in reversed(range(120))]

        errors = api.get(base, params={"stream": "stderr", "limit": 1000}).json()["lines"]
        assert {line["stream"] for line in errors} == {"stderr"} and len(errors) >= 24
        found = api.get(base, params={"q": "/items/7", "order": "asc"}).json()["lines"]
        assert [line["message"] for line in found][:3] == [
            "GET /items/7",
            "GET /items/70",
            "GET /items/71",
        ]
        assert api.get(base, params={"q": "%"}).json()["lines"] == []  # LIKE wildcards escaped

        prune_runtime_log(store, deployment_id, 50)
        with store.read() as s:
            kept = s.scalar(
                select(func.count()).where(RuntimeLogRow.deployment_id == deployment_id)
            )
        assert kept == 50
        newest = api.get(base, params={"limit": 1}).json()["lines"][0]["message"]
        assert newest.startswith("GET /items/1")  # the newest burst survived pruning
    finally:
        store.close()


def test_log_writer_prunes_to_the_cap(server: Server, api: httpx.Client) -> None:
    name = unique("cap")
    api.post("/projects", json={"name": name})
    store = Store.connect(database_uri(server))
    try:
        (deployment_id,) = insert_deployments(store, name, 1, datetime.now(UTC))
        writer = LogWriter(store, runtime_log_cap=40)
        now = datetime.now(UTC)
        for batch in range(10):
            writer.write(
                [
                    RuntimeLogLine(deployment_id, "i1", "stdout", now, f"{batch}-{n}")
                    for n in range(20)
                ]
            )
            writer.flush()
        with store.read() as s:
            count = s.scalar(
                select(func.count()).where(RuntimeLogRow.deployment_id == deployment_id)
            )
        assert count is not None and 40 <= count <= 44
    finally:
        store.close()


def test_runtime_log_stream_follows_new_lines(server: Server, api: httpx.Client) -> None:
    name = unique("follow")
    api.post("/projects", json={"name": name})
    store = Store.connect(database_uri(server))
    try:
        (deployment_id,) = insert_deployments(store, name, 1, datetime.now(UTC))
        writer = LogWriter(store, runtime_log_cap=1000)
        now = datetime.now(UTC)
        writer.write([RuntimeLogLine(deployment_id, "i1", "stdout", now, "old line")])
        writer.flush()
        received: list[dict[str, str]] = []
        opened = threading.Event()

        def follow() -> None:
            path = f"/deployments/{deployment_id}/logs/runtime/stream"
            with api.stream("GET", path, params={"stream": "stderr"}) as response:
                opened.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        received.append(json.loads(line[5:]))
                        if len(received) == 2:
                            return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert opened.wait(30)
        for n in range(4):
            stream = "stderr" if n % 2 else "stdout"
            writer.write([RuntimeLogLine(deployment_id, "i1", stream, now, f"new {n}")])
            writer.flush()
        reader.join(30)
        assert [r["message"] for r in received] == ["new 1", "new 3"]  # new lines, filtered
    finally:
        store.close()
