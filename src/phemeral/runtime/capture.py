"""Reads every instance's stdout/stderr pipes, line by line, into the `RuntimeLogSink`.

Pipes are always drained (an app never blocks on its output); lines are split at
`loglines.MAX_LINE_BYTES`, floods are rate-limited per deployment with a "N lines dropped"
marker, and lines reach the sink in batches (at most every `FLUSH_INTERVAL` s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from phemeral.models import LogStream, RuntimeLogLine, RuntimeLogSink
from phemeral.runtime.loglines import LineSplitter, RateLimiter, dropped_marker

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
BATCH_MAX = 500
READ_SIZE = 65536

Tee = Callable[[str, str], None]  # (stream, line) → None


@dataclass
class _Reader:
    deployment_id: str
    instance: str
    stream: LogStream
    splitter: LineSplitter
    tee: Tee | None
    done: asyncio.Future[None]


class LogCapture:
    def __init__(
        self,
        sink: RuntimeLogSink,
        *,
        rate: float | None = None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self._rate = rate
        self._burst = burst
        self._limiters: dict[str, RateLimiter] = {}
        self._batch: list[RuntimeLogLine] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._readers: dict[int, _Reader] = {}

    def limiter(self, deployment_id: str) -> RateLimiter:
        limiter = self._limiters.get(deployment_id)
        if limiter is None:
            limiter = RateLimiter()
            if self._rate is not None:
                limiter.rate = self._rate
            if self._burst is not None:
                limiter.burst = self._burst
            self._limiters[deployment_id] = limiter
        return limiter

    def attach(
        self, fd: int, deployment_id: str, instance: str, stream: LogStream, tee: Tee | None = None
    ) -> asyncio.Future[None]:
        """Start draining ``fd`` (a pipe's read end, owned from now on); resolves at EOF."""
        loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        done: asyncio.Future[None] = loop.create_future()
        self._readers[fd] = _Reader(deployment_id, instance, stream, LineSplitter(), tee, done)
        loop.add_reader(fd, self._readable, fd)
        return done

    def set_tee(self, deployment_id: str, tee: Tee | None) -> None:
        """Copy (or stop copying) a deployment's lines somewhere else, e.g. a build log."""
        for reader in self._readers.values():
            if reader.deployment_id == deployment_id:
                reader.tee = tee

    def _readable(self, fd: int) -> None:
        reader = self._readers[fd]
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish(fd)
            return
        for line in reader.splitter.feed(data):
            self.emit(reader.deployment_id, reader.instance, reader.stream, line, reader.tee)

    def _finish(self, fd: int) -> None:
        reader = self._readers.pop(fd, None)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        if reader is None:
            return
        for line in reader.splitter.flush():
            self.emit(reader.deployment_id, reader.instance, reader.stream, line, reader.tee)
        if not reader.done.done():
            reader.done.set_result(None)

    def emit(
        self,
        deployment_id: str,
        instance: str,
        stream: LogStream,
        message: str,
        tee: Tee | None = None,
        *,
        limited: bool = True,
    ) -> None:
        """One line from an instance (or from the runtime itself, ``stream="system"``)."""
        if tee is not None:
            with contextlib.suppress(Exception):
                tee(stream, message)
        limiter = self.limiter(deployment_id)
        if limited and not limiter.admit(self.clock()):
            self._schedule()
            return
        now = datetime.now(UTC)
        dropped = limiter.take_dropped()
        if dropped:
            self._batch.append(
                RuntimeLogLine(deployment_id, instance, "system", now, dropped_marker(dropped))
            )
        self._batch.append(RuntimeLogLine(deployment_id, instance, stream, now, message))
        if len(self._batch) >= BATCH_MAX:
            self.flush()
        else:
            self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                self._flusher = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        now = datetime.now(UTC)
        # Drops with no admitted line after them yet are reported now, not at the next line.
        for deployment_id, limiter in self._limiters.items():
            dropped = limiter.take_dropped()
            if dropped:
                self._batch.append(
                    RuntimeLogLine(deployment_id, "-", "system", now, dropped_marker(dropped))
                )
        batch, self._batch = self._batch, []
        if batch:
            try:
                self.sink.write(batch)
            except Exception:  # a failing sink must not stop the pipes from draining
                log.exception("runtime log sink failed; %d lines lost", len(batch))

    async def drain(self, done: list[asyncio.Future[None]], timeout: float) -> None:
        """Wait (bounded) until these pipes reached EOF, so an instance's last words are kept."""
        pending = [d for d in done if not d.done()]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), timeout)

    def close(self) -> None:
        for fd in list(self._readers):
            self._finish(fd)
        self.flush()
