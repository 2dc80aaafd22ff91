"""One framed connection over a Unix socket (asyncio): send, call-and-answer, incoming requests.

`Channel.call(op, **fields)` sends ``{"op", "id", …}`` and waits for the frame with ``re`` equal
to that id (``log`` frames before it go to ``on_log``). Frames without ``re`` are requests from
the peer and go to the handler given at construction; a handler's return value (or error) is
answered when the request carried an ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from phemeral.dataplane.wire import (
    HEADER,
    FrameError,
    Message,
    error_from_json,
    error_to_json,
    frame,
    frame_length,
    parse,
)
from phemeral.errors import Unavailable

log = logging.getLogger(__name__)

Handler = Callable[["Channel", Message], Awaitable[Any]]
LogCallback = Callable[[str, str], None]


class ChannelClosed(Unavailable):
    """The peer went away before answering."""


class Channel:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], LogCallback | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, path: str, handler: Handler | None = None) -> Channel:
        reader, writer = await asyncio.open_unix_connection(path, limit=2**20)
        return cls(reader, writer, handler)

    def send(self, message: Message) -> None:
        """Queue one frame (never blocks; ordering is kept). On the loop's thread only."""
        if self.closed:
            raise ChannelClosed("the data plane connection is closed")
        self.writer.write(frame(message))

    def send_threadsafe(self, loop: asyncio.AbstractEventLoop, message: Message) -> None:
        """`send` from any thread: encoded here, written by ``loop`` (the channel's) in the
        order of the calls."""
        if self.closed:
            raise ChannelClosed("the data plane connection is closed")
        data = frame(message)
        loop.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    async def call(self, op: str, *, on_log: LogCallback | None = None, **fields: Any) -> Any:
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, on_log)
        try:
            self.send({"op": op, "id": request_id, **fields})
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def run(self) -> None:
        """Read frames until the peer closes; then every pending call fails."""
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                body = await self.reader.readexactly(frame_length(header))
                self._dispatch(parse(body))
        except (asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
            if isinstance(exc, FrameError):
                log.warning("data plane connection dropped: %s", exc)
        finally:
            self.close()

    def _dispatch(self, message: Message) -> None:
        answer_to = message.get("re")
        if answer_to is not None:
            pending = self._pending.get(answer_to)
            if pending is None:
                return
            future, on_log = pending
            if "log" in message:
                if on_log is not None:
                    stage, text = message["log"]
                    on_log(str(stage), str(text))
            elif future.done():
                return
            elif "error" in message:
                future.set_exception(error_from_json(message["error"]))
            else:
                future.set_result(message.get("ok"))
            return
        if self.handler is None:
            return
        task = asyncio.ensure_future(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: Message) -> None:
        assert self.handler is not None
        request_id = message.get("id")
        try:
            result = await self.handler(self, message)
        except Exception as exc:
            if request_id is None:
                log.exception("data plane request %r failed", message.get("op"))
            elif not self.closed:
                self.send({"re": request_id, "error": error_to_json(exc)})
            return
        if request_id is not None and not self.closed:
            self.send({"re": request_id, "ok": result})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosed("the data plane connection closed"))
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
