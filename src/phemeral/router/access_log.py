"""Access log lines, batched off the hot path into the runtime log sink."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from phemeral.models import RuntimeLogLine, RuntimeLogSink

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
FLUSH_LINES = 512
MAX_PENDING = 50_000


def access_message(
    method: bytes,
    target: bytes,
    status: int,
    sent: int,
    duration_ms: float,
    wake_ms: float | None,
) -> str:
    """``GET /path 200 123B 1.2ms [wake 340.0ms]``; the query string is left out (secrets)."""
    path = target.split(b"?", 1)[0][:256].decode("ascii", "replace")
    text = f"{method.decode('ascii', 'replace')} {path} {status} {sent}B {duration_ms:.1f}ms"
    if wake_ms is not None:
        text += f" wake {wake_ms:.1f}ms"
    return text


class AccessLog:
    """Collects lines and hands them to the sink in batches, every 250 ms or 512 lines."""

    def __init__(self, sink: RuntimeLogSink | None, loop: asyncio.AbstractEventLoop) -> None:
        self._sink = sink
        self._loop = loop
        self._pending: list[RuntimeLogLine] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, deployment_id: str, message: str) -> None:
        if self._sink is None or len(self._pending) >= MAX_PENDING:
            return
        self._pending.append(
            RuntimeLogLine(deployment_id, "router", "router", datetime.now(UTC), message)
        )
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._pending = self._pending, []
        if not lines or self._sink is None:
            return
        try:
            self._sink.write(lines)
        except Exception:  # the sink is another part's; a failure there must not stop routing
            log.exception("runtime log sink refused %d access log lines", len(lines))
