"""A real `phemeral serve` process per backend (SQLite file, and a fresh PostgreSQL database)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from .serverkit import PG_ADMIN, Server


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for each module's server, dropped at the end.

    Each server has its own data dir, hence its own secret key: a database shared between
    servers would hold secrets the next server cannot decrypt (and rightly refuses to start).
    """
    name = "phemeral_test_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    srv = Server(data_dir=tmp_path_factory.mktemp(f"data-{backend}"), database_url=url).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
