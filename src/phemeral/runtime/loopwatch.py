"""The event loop's stalls: a timer that should fire every ``interval`` s notes how late it
fired, so a callback that held the loop (a blocking call, a long computation) shows up as a
stall with its time, and a wake can tell how much of its time the loop was not its own
(`waketrace`). One timer per ``interval``: nothing measurable on an idle loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

log = logging.getLogger(__name__)

STALL_MS = 20.0  # later than this is a stall (a loop busy with ordinary work stays under)
LOG_STALL_MS = 250.0  # a stall this long is logged
KEPT = 512  # the last stalls kept


def overlap_ms(stalls: list[tuple[float, float]], start: float, end: float) -> float:
    """How much of [start, end] the stalls (start, end), all in s, covered, in ms."""
    total = 0.0
    for begin, finish in stalls:
        total += max(0.0, min(finish, end) - max(begin, start))
    return total * 1000


class LoopWatch:
    """Records the event loop's stalls (``time.perf_counter()`` spans) while it runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.stalls: deque[tuple[float, float]] = deque(maxlen=KEPT)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stalled_ms(self, start: float, end: float) -> float:
        """How long the loop stalled between ``start`` and ``end`` (perf_counter s)."""
        return overlap_ms([s for s in self.stalls if s[1] >= start], start, end)

    async def _run(self) -> None:
        expected = time.perf_counter() + self.interval
        while True:
            await asyncio.sleep(max(0.0, expected - time.perf_counter()))
            now = time.perf_counter()
            late = now - expected
            if late * 1000 >= STALL_MS:
                self.stalls.append((expected, now))
                if late * 1000 >= LOG_STALL_MS:
                    log.warning("the event loop stalled for %.0f ms", late * 1000)
            expected = now + self.interval
