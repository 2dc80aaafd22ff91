"""A real `phemeral serve` process per backend (SQLite file, and a fresh PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import platformkit
import pytest

from .serverkit import Server


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for each module's server, dropped at the end.

    Each server has its own data dir, hence its own secret key: a database shared between
    servers would hold secrets the next server cannot decrypt (and rightly refuses to start).
    """
    with platformkit.pg_database() as url:
        yield url


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
    srv.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
