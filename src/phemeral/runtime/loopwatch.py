"""The event loop's stalls: a timer that should fire every ``interval`` s notes how late it
fired, so a callback that held the loop (a blocking call, a long computation) shows up as a
stall with its time, and a wake can tell how much of its time the loop was not its own
(`waketrace`). One timer per ``interval``: nothing measurable on an idle loop.

A stall is only seen once it is over; what held the loop is found by a watchdog thread that
looks every ``interval`` s whether the timer is late by `LOG_STALL_MS` and, the first time it
is during one stall, logs where the loop's thread is at that moment (its Python stack: the
blocking call and who made it), at most `STACKS_PER_MINUTE` a minute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections import deque

log = logging.getLogger(__name__)

STALL_MS = 20.0  # later than this is a stall (a loop busy with ordinary work stays under)
LOG_STALL_MS = 250.0  # a stall this long is logged
KEPT = 512  # the last stalls kept
STACKS_PER_MINUTE = 6  # stacks of held loops logged at most


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
        self._beat = time.perf_counter()  # when the timer last fired
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.held_at: deque[str] = deque(maxlen=16)  # the stacks logged

    def start(self) -> None:
        if self._task is None:
            self._beat = time.perf_counter()
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._stop.clear()
            self._watchdog = threading.Thread(
                target=self._watch,
                args=(threading.get_ident(),),
                name="loop-watchdog",
                daemon=True,
            )
            self._watchdog.start()

    async def close(self) -> None:
        self._stop.set()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.join(timeout=1.0)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stalled_ms(self, start: float, end: float) -> float:
        """How long the loop stalled between ``start`` and ``end`` (perf_counter s)."""
        return overlap_ms([s for s in self.stalls if s[1] >= start], start, end)

    def _watch(self, loop_thread: int) -> None:
        """The watchdog: where the loop's thread is while the timer is late (see above)."""
        reported = -1.0
        logged: deque[float] = deque()
        while not self._stop.wait(self.interval):
            beat = self._beat
            now = time.perf_counter()
            held = now - beat - self.interval
            if held * 1000 < LOG_STALL_MS or beat == reported:
                continue
            reported = beat
            while logged and now - logged[0] > 60:
                logged.popleft()
            if len(logged) >= STACKS_PER_MINUTE:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                continue
            logged.append(now)
            stack = "".join(traceback.format_stack(frame, limit=16))
            self.held_at.append(stack)
            log.warning(
                "the event loop has been held for %.0f ms so far, at:\n%s", held * 1000, stack
            )

    async def _run(self) -> None:
        expected = time.perf_counter() + self.interval
        while True:
            await asyncio.sleep(max(0.0, expected - time.perf_counter()))
            now = self._beat = time.perf_counter()
            late = now - expected
            if late * 1000 >= STALL_MS:
                self.stalls.append((expected, now))
                if late * 1000 >= LOG_STALL_MS:
                    log.warning("the event loop stalled for %.0f ms", late * 1000)
            expected = now + self.interval
