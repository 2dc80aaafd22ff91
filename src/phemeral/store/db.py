"""Connections and transactions: SQLite (embedded default) or PostgreSQL.

Reads use `Store.read()`, writes use `Store.write()`. On SQLite a write transaction starts with
``BEGIN IMMEDIATE``: a deferred transaction that later upgrades to a write gets SQLITE_BUSY at
once, without waiting on the busy handler, which is how "database is locked" reaches users.
Writers of one process also queue on a lock before ``BEGIN``: SQLite's busy handler polls with
growing sleeps (1, 2, 5 … 100 ms), so a writer that found the database locked slept long after
the other one committed; the lock hands over at once (other processes still meet the busy
handler).
Errors that mean "the database cannot answer now" become `StoreUnavailable` (API: 503).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from phemeral.errors import StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 15_000
_WRITE = "phemeral_write"


def open_engine(url: str) -> Engine:
    """An engine tuned for its backend (WAL + busy timeout on SQLite, pre-ping on PostgreSQL)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


def _sqlite_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can say IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Store:
    """The database behind the control plane; sync (async callers use threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        # SQLite has one writer at a time: this process's writers wait here, not in the busy
        # handler's sleeps (reentrant: a nested write is SQLite's busy handler's, as before)
        self._write_lock = threading.RLock() if self.is_sqlite else None

    @classmethod
    def connect(cls, url: str) -> Store:
        return cls(open_engine(url))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with _unavailable_as_error(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One committed transaction (rolled back if the block raises)."""
        lock = self._write_lock
        if lock is not None and not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise StoreUnavailable("the database is busy (another write is running); try again")
        try:
            with (
                _unavailable_as_error(),
                Session(self._writer, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        finally:
            if lock is not None:
                lock.release()

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_as_error() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailable(_describe(exc)) from exc
    except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
        raise StoreUnavailable("the database is busy (no free connection); try again") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(_describe(exc)) from exc
        raise


def _describe(exc: DBAPIError) -> str:
    text = str(exc.orig).strip().splitlines()[0] if exc.orig else "unknown error"
    return f"the database cannot answer right now ({text}); try again shortly"
