"""Runtime and access log lines, held by the data plane until the control plane stores them.

The data plane never opens the database (it keeps serving while the database or the control
plane is down), so its `RuntimeLogSink` is this bounded buffer: lines go to the control plane
over the data plane socket as soon as they come (``on_lines`` schedules that), and every
`RELAY_INTERVAL` seconds in any case. While no control plane is attached
at most `limit` lines wait; older ones are dropped, and the count goes to the data plane's own
log when lines flow again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from phemeral.models import RuntimeLogLine

RELAY_INTERVAL = 0.1
DEFAULT_LIMIT = 100_000
log = logging.getLogger(__name__)


class LogRelay:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._lines: deque[RuntimeLogLine] = deque(maxlen=limit)
        self.limit = limit
        self.dropped = 0
        self.on_lines: Callable[[], None] | None = None

    def write(self, lines: list[RuntimeLogLine]) -> None:
        """`RuntimeLogSink`: never blocks; past the limit the oldest lines go."""
        overflow = len(self._lines) + len(lines) - self.limit
        if overflow > 0:
            self.dropped += min(overflow, len(self._lines) + len(lines))
        self._lines.extend(lines)
        if self.on_lines is not None:
            self.on_lines()

    def drain(self) -> list[RuntimeLogLine]:
        lines = list(self._lines)
        self._lines.clear()
        if self.dropped:
            log.warning(
                "%d runtime log lines dropped while the control plane was away", self.dropped
            )
            self.dropped = 0
        return lines
