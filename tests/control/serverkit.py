"""The control-plane tests' names for the shared platform kit (`tests/platformkit.py`)."""

from __future__ import annotations

import secrets
from pathlib import Path

from platformkit import PG_ADMIN, REPO, Platform, free_port, tar_gz, upload, wait_done
from sqlalchemy import select

from phemeral.store import Store
from phemeral.store.schema import Project

__all__ = [
    "FASTAPI_APP",
    "NOT_A_PROJECT",
    "PG_ADMIN",
    "REPO",
    "Server",
    "database_uri",
    "free_port",
    "names_in_database_order",
    "tar_gz",
    "unique",
    "upload",
    "wait_done",
]


class Server(Platform):
    """`Platform` as the control-plane tests know it: ``extra_env`` is its environment."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None,
        *,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(data_dir, database_url, env=dict(extra_env or {}))
        self.args = list(extra_args or [])
        if port is not None:
            self.port = port

    @property
    def extra_env(self) -> dict[str, str]:
        return self.env

    @extra_env.setter
    def extra_env(self, value: dict[str, str]) -> None:
        self.env = dict(value)

    @property
    def extra_args(self) -> list[str]:
        return list(self.args)

    @extra_args.setter
    def extra_args(self, value: list[str]) -> None:
        self.args = list(value)

    def start(self, timeout: float = 60) -> Server:
        super().start(timeout)
        return self


def unique(prefix: str = "p") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


FASTAPI_APP = {
    "requirements.txt": "fastapi\nuvicorn\n",
    "main.py": 'from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get("/")\ndef root():\n'
    '    return {"ok": True}\n',
}
NOT_A_PROJECT = {"notes.txt": "nothing to build here\n"}


def database_uri(server: Server) -> str:
    return server.database_url or f"sqlite:///{server.data_dir / 'phemeral.db'}"


def names_in_database_order(server: Server) -> list[str]:
    """Every project's name in the order the server pages them (the database's collation)."""
    store = Store.connect(database_uri(server))
    try:
        with store.read() as s:
            return list(s.scalars(select(Project.name).order_by(Project.name)))
    finally:
        store.close()
