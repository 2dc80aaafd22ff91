"""One real platform per module, with its embedded PostgreSQL cluster and Redis servers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .kit import Server, stop_leftovers, traversable


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # Not under pytest's own temp root: each new pytest session on the machine resets that to
    # 0700, which would lock the database servers (their own user) out of their files.
    root = Path(tempfile.mkdtemp(prefix="phemeral-services-"))
    data_dir = root / "data"
    traversable(data_dir)
    srv = Server(data_dir=data_dir, database_url=None).start()
    try:
        yield srv
    finally:
        srv.kill()
        stop_leftovers(data_dir)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
