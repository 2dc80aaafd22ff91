"""Concurrent writers never see "database is locked"; an unreachable database is a 503."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from phemeral.api import create_app
from phemeral.deploys import ControlPlane, create_project
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter
from phemeral.store.schema import Environment

from .serverkit import Server, unique


def test_read_then_write_transactions_from_many_threads(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: every increment lands, none fails with SQLITE_BUSY."""
    store = Store.connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(store)
    cp = ControlPlane(
        settings=Settings(data_dir=tmp_path),
        store=store,
        box=SecretBox.open(tmp_path),
        logs=LogWriter(store, runtime_log_cap=100),
    )
    create_project(cp, "counter")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def bump() -> None:
        start.wait()
        for _ in range(40):
            try:
                with store.write() as s:
                    env = s.scalars(select(Environment)).one()
                    value = env.last_push_seq  # read …
                    env.last_push_seq = value + 1  # … then write, in one transaction
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.read() as s:
        assert s.scalars(select(Environment)).one().last_push_seq == 8 * 40
    store.close()


def test_concurrent_api_writers(server: Server) -> None:
    name = unique("busy")
    with server.client() as api:
        api.post("/projects", json={"name": name})

    def work(worker: int) -> list[int]:
        codes = []
        with server.client() as api:
            base = f"/projects/{name}/environments/production/variables"
            for i in range(12):
                codes.append(api.post(base, json={"values": {f"W{worker}_{i}": "x"}}).status_code)
            env = {"name": f"e{worker}", "domains": [f"{name}-d{worker}"]}
            codes.append(api.post(f"/projects/{name}/environments", json=env).status_code)
            created = api.post("/projects", json={"name": f"{name}-p{worker}"})
            codes.append(created.status_code)
            uids.append(created.json()["uid"])
        return codes

    uids: list[int] = []

    with ThreadPoolExecutor(8) as pool:
        results = [code for codes in pool.map(work, range(8)) for code in codes]
    assert sorted(set(results)) == [200, 201], results
    assert len(set(uids)) == 8  # one OS user per project, even when created at once
    with server.client() as api:
        items = api.get(f"/projects/{name}/environments/production/variables").json()["items"]
        assert len(items) == 8 * 12
        assert len(api.get(f"/projects/{name}/environments").json()["items"]) == 9


def test_unreachable_database_answers_503_with_retry_after(tmp_path: Path) -> None:
    store = Store.connect("postgresql+psycopg://postgres@127.0.0.1:1/none")
    cp = ControlPlane(
        settings=Settings(data_dir=tmp_path),
        store=store,
        box=SecretBox.open(tmp_path),
        logs=LogWriter(store, runtime_log_cap=100),
    )

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            auth = {"Authorization": "Bearer phm_x"}
            return await client.get("/api/projects", headers=auth), await client.get("/api/health")

    response, health = asyncio.run(ask())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "store_unavailable"
    assert health.json()["database"] == "unavailable"


@pytest.mark.postgres
def test_postgres_restart_is_survived_without_a_process_restart() -> None:
    """pool_pre_ping: a connection killed server-side is replaced, not surfaced."""
    import psycopg

    from .serverkit import PG_ADMIN

    store = Store.connect(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"))
    with store.read() as s:
        pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with store.read() as s:
        assert s.connection().exec_driver_sql("SELECT 1").scalar() == 1
    store.close()


def test_health_is_public(server: Server) -> None:
    assert httpx.get(server.url + "/api/health").status_code == 200


def test_racing_for_one_domain_gives_one_winner_and_409s(server: Server) -> None:
    base = unique("race")
    with server.client() as api:
        for n in range(6):
            api.post("/projects", json={"name": f"{base}-{n}"})

    def claim(n: int) -> int:
        with server.client() as api:
            body = {"name": "qa", "domains": [f"{base}-shared"]}
            return api.post(f"/projects/{base}-{n}/environments", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(claim, range(6)))
    assert codes == [201] + [409] * 5, codes
