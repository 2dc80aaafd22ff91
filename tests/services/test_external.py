"""`--postgres-admin-url`: databases provisioned into an existing server (the machine's own
PostgreSQL on 5432 here). Control plane only: no app is deployed against that server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from control.serverkit import PG_ADMIN

from .kit import Server, unique

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def external() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="phemeral-services-ext-"))
    srv = Server(data_dir=root / "data", database_url=None)
    srv.extra_env = {"PHEMERAL_POSTGRES_ADMIN_URL": PG_ADMIN}
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_provisions_into_the_external_server_and_cleans_up(external: Server) -> None:
    with external.client() as api:
        project = unique("ext")
        api.post("/projects", json={"name": project})
        made = api.post(
            "/services", json={"kind": "postgres", "project": project, "connection_limit": 3}
        )
        assert made.status_code == 201, made.text
        svc = made.json()
        assert svc["location"] == "external" and svc["port"] == 5432
        assert not (external.data_dir / "services" / "postgres").exists()  # no embedded cluster
        creds = api.get(f"/services/{svc['name']}", params={"reveal": "true"}).json()["credentials"]
        with psycopg.connect(creds["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (svc["database"],)
            conn.execute("CREATE TABLE t (x int)")
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            row = admin.execute(
                "SELECT datconnlimit, has_database_privilege('public', datname, 'CONNECT') "
                "FROM pg_database WHERE datname = %s",
                (svc["database"],),
            ).fetchone()
            assert row == (3, False)

        done = api.delete(f"/services/{svc['name']}")
        assert done.status_code == 200, done.text
        assert Path(done.json()["final_backup"]).stat().st_size > 0
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            left = admin.execute(
                "SELECT (SELECT count(*) FROM pg_database WHERE datname = %s),"
                " (SELECT count(*) FROM pg_roles WHERE rolname = %s)",
                (svc["database"], svc["user"]),
            ).fetchone()
            assert left == (0, 0)


def test_the_embedded_variables_point_at_the_external_host(external: Server) -> None:
    with external.client() as api:
        project = unique("ext")
        api.post("/projects", json={"name": project})
        svc = api.post("/services", json={"kind": "postgres", "project": project}).json()
        try:
            listed = api.get(f"/projects/{project}/environments/production/variables").json()
            items = {v["key"]: v for v in listed["items"]}
            assert items["PGHOST"]["value"] == "127.0.0.1" and items["PGPORT"]["value"] == "5432"
        finally:
            assert api.delete(f"/services/{svc['name']}").status_code == 200
