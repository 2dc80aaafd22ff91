"""Build and runtime log lines: buffered in memory, written by one background thread.

Writers (the builder, the runtime) must never wait on the database, so `write` only appends;
the thread flushes every `interval` seconds, and `flush()` forces it (the build does, before
it marks a deployment finished, so a reader who sees the final status has every line).
Runtime lines are pruned to `runtime_log_cap` per deployment.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select

from phemeral.errors import StoreUnavailable
from phemeral.models import BuildLogLine, RuntimeLogLine
from phemeral.store.db import Store
from phemeral.store.schema import BuildLogRow, RuntimeLogRow

MAX_MESSAGE = 16 * 1024
log = logging.getLogger(__name__)


class LogWriter:
    def __init__(self, store: Store, *, runtime_log_cap: int, interval: float = 0.1) -> None:
        self._store = store
        self._cap = runtime_log_cap
        self._interval = interval
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._build: list[BuildLogLine] = []
        self._runtime: list[RuntimeLogLine] = []
        self._since_prune: dict[str, int] = defaultdict(int)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_build(self, line: BuildLogLine) -> None:
        with self._lock:
            self._build.append(line)

    def write(self, lines: list[RuntimeLogLine]) -> None:
        """`RuntimeLogSink`: never blocks on the database."""
        with self._lock:
            self._runtime.extend(lines)

    def build_log(self, deployment_id: str) -> DeploymentBuildLog:
        return DeploymentBuildLog(self, deployment_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="phemeral-logs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except StoreUnavailable:
                continue  # the database is busy or down: the lines wait for the next tick
            except Exception:
                log.exception("writing log lines failed")

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                build, self._build = self._build, []
                runtime, self._runtime = self._runtime, []
            if not build and not runtime:
                return
            try:
                self._insert(build, runtime)
            except StoreUnavailable:
                with self._lock:  # put them back in front, in order, for the next attempt
                    self._build[:0] = build
                    self._runtime[:0] = runtime
                raise
            except Exception:
                # e.g. lines of a deployment deleted meanwhile: write the others one batch per
                # deployment, dropping the batches the database refuses, never blocking the rest
                self._insert_each(build, runtime)
            self._prune(runtime)

    def _insert_each(self, build: list[BuildLogLine], runtime: list[RuntimeLogLine]) -> None:
        groups: dict[str, tuple[list[BuildLogLine], list[RuntimeLogLine]]] = {}
        for b in build:
            groups.setdefault(b.deployment_id, ([], []))[0].append(b)
        for r in runtime:
            groups.setdefault(r.deployment_id, ([], []))[1].append(r)
        for deployment_id, (b_lines, r_lines) in groups.items():
            try:
                self._insert(b_lines, r_lines)
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.warning("dropped log lines of %s: %s", deployment_id, exc)

    def _insert(self, build: list[BuildLogLine], runtime: list[RuntimeLogLine]) -> None:
        with self._store.write() as session:
            if build:
                session.execute(
                    insert(BuildLogRow),
                    [
                        {
                            "deployment_id": line.deployment_id,
                            "stage": line.stage[:32],
                            "timestamp": line.timestamp,
                            "message": line.message[:MAX_MESSAGE],
                        }
                        for line in build
                    ],
                )
            if runtime:
                session.execute(
                    insert(RuntimeLogRow),
                    [
                        {
                            "deployment_id": line.deployment_id,
                            "instance": line.instance[:64],
                            "stream": line.stream,
                            "timestamp": line.timestamp,
                            "message": line.message[:MAX_MESSAGE],
                        }
                        for line in runtime
                    ],
                )

    def _prune(self, runtime: list[RuntimeLogLine]) -> None:
        due = []
        for line in runtime:
            self._since_prune[line.deployment_id] += 1
        for deployment_id, count in list(self._since_prune.items()):
            if count >= max(1, self._cap // 10):
                due.append(deployment_id)
                del self._since_prune[deployment_id]
        for deployment_id in due:
            prune_runtime_log(self._store, deployment_id, self._cap)


def prune_runtime_log(store: Store, deployment_id: str, cap: int) -> None:
    """Delete all but the newest `cap` runtime lines of one deployment."""
    with store.write() as session:
        boundary = session.scalar(
            select(RuntimeLogRow.id)
            .where(RuntimeLogRow.deployment_id == deployment_id)
            .order_by(RuntimeLogRow.id.desc())
            .offset(cap)
            .limit(1)
        )
        if boundary is not None:
            session.execute(
                delete(RuntimeLogRow).where(
                    RuntimeLogRow.deployment_id == deployment_id, RuntimeLogRow.id <= boundary
                )
            )


class DeploymentBuildLog:
    """`BuildLog` for one deployment: stamps each line with the time it was written."""

    def __init__(self, writer: LogWriter, deployment_id: str) -> None:
        self._writer = writer
        self.deployment_id = deployment_id

    def write(self, stage: str, message: str) -> None:
        now = datetime.now(UTC)
        for text in message.splitlines() or [""]:
            self._writer.add_build(BuildLogLine(self.deployment_id, stage, now, text))
