"""Access log lines, batched off the hot path into the runtime log sink.

A request only appends a tuple; the lines are formatted and handed to the sink every 250 ms
(or every 512 lines), so the sink is never called per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from phemeral.models import RuntimeLogLine, RuntimeLogSink

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
FLUSH_LINES = 512
MAX_PENDING = 50_000

# deployment id, wall time, method, target, status, bytes sent, duration ms, wake ms
Record = tuple[str, float, bytes, bytes, int, int, float, float | None]


def access_message(
    method: bytes,
    target: bytes,
    status: int,
    sent: int,
    duration_ms: float,
    wake_ms: float | None,
) -> str:
    """``GET /path 200 123B 1.2ms [wake 340.0ms]``; the query string is left out (secrets).

    Methods and targets were validated as visible ASCII, so latin-1 decoding is exact.
    """
    return _access_suffix(_request_prefix(method, target), status, sent, duration_ms, wake_ms)


def _request_prefix(method: bytes, target: bytes) -> str:
    query = target.find(b"?")
    path = (target if query < 0 else target[:query])[:256].decode("latin-1")
    return f"{method.decode('latin-1')} {path} "


def _access_suffix(
    prefix: str, status: int, sent: int, duration_ms: float, wake_ms: float | None
) -> str:
    if wake_ms is None:
        return f"{prefix}{status} {sent}B {duration_ms:.1f}ms"
    return f"{prefix}{status} {sent}B {duration_ms:.1f}ms wake {wake_ms:.1f}ms"


class AccessLog:
    """Collects records and hands them to the sink as `RuntimeLogLine` batches."""

    def __init__(self, sink: RuntimeLogSink | None, loop: asyncio.AbstractEventLoop) -> None:
        self._sink = sink
        self._loop = loop
        self._pending: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self,
        deployment_id: str,
        method: bytes,
        target: bytes,
        status: int,
        sent: int,
        duration_ms: float,
        wake_ms: float | None,
    ) -> None:
        pending = self._pending
        if self._sink is None or len(pending) >= MAX_PENDING:
            return
        pending.append(
            (deployment_id, time.time(), method, target, status, sent, duration_ms, wake_ms)
        )
        if self._timer is None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self.flush)
        elif len(pending) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        records, self._pending = self._pending, []
        if not records or self._sink is None:
            return
        prefixes: dict[tuple[bytes, bytes], str] = {}  # "GET /path ", for repeated requests
        lines = []
        for deployment_id, at, method, target, status, sent, duration, wake in records:
            prefix = prefixes.get((method, target))
            if prefix is None:
                prefix = prefixes[method, target] = _request_prefix(method, target)
            if wake is None:
                message = f"{prefix}{status} {sent}B {duration:.1f}ms"
            else:
                message = _access_suffix(prefix, status, sent, duration, wake)
            timestamp = datetime.fromtimestamp(at, UTC)
            lines.append(RuntimeLogLine(deployment_id, "router", "router", timestamp, message))
        try:
            self._sink.write(lines)
        except Exception:  # the sink is another part's; a failure there must not stop routing
            log.exception("runtime log sink refused %d access log lines", len(lines))
