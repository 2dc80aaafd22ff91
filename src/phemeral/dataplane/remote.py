"""The data plane as the other processes see it, over its Unix socket.

- `RemoteRuntime`: the control plane's `RuntimeControl` (register, boot check, release
  phase, instances, retire), its routing snapshot listener and TLS listener. Closing it never
  stops an app: apps belong to the data plane.
- `RemoteBackends`: a router worker's `Backends`. Upstreams of running instances are cached
  (a request to a running app costs no round trip); a wake is one ``wake`` call shared by the
  worker's concurrent requests (the router's `WakeGate`); request counts go to the runtime in
  batches every `ACTIVITY_INTERVAL`; a ``gone`` push drops a cached upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from phemeral.dataplane.channel import Channel, ChannelClosed
from phemeral.dataplane.wire import (
    HEADER,
    Message,
    certificate_from_json,
    certificate_to_json,
    error_from_json,
    frame,
    frame_length,
    lines_from_json,
    lines_to_json,
    parse,
    release_out,
    snapshot_from_json,
    snapshot_to_json,
    state_from_json,
    upstream_from_json,
)
from phemeral.errors import Unavailable
from phemeral.models import (
    BuildLog,
    InstanceState,
    Release,
    RoutingSnapshot,
    RuntimeLogLine,
    RuntimeLogSink,
    TlsCertificate,
    Upstream,
)

ACTIVITY_INTERVAL = 0.1
CONNECT_TIMEOUT = 30.0
SYNC_TIMEOUT = 10.0


async def connect(path: str, handler: Any = None, timeout: float = CONNECT_TIMEOUT) -> Channel:
    """Connect to the data plane, waiting (bounded) for its socket to appear."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Channel.connect(path, handler)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class RemoteRuntime:
    """`RuntimeControl` for a control plane whose runtime lives in the data plane process."""

    def __init__(self, path: str, log_sink: RuntimeLogSink) -> None:
        self.path = path
        self.log_sink = log_sink
        self._channel: Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sync: socket.socket | None = None
        self._sync_lock = threading.Lock()
        self._sync_ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Connect and attach: the data plane's runtime log lines come to ``log_sink``."""
        self._loop = asyncio.get_running_loop()
        self._channel = await connect(self.path, self._pushed)
        self._reader = asyncio.create_task(self._channel.run())
        await self._channel.call("attach")

    async def _pushed(self, channel: Channel, message: Message) -> None:
        if message.get("op") == "logs":
            self.log_sink.write(lines_from_json(message["lines"]))

    async def close(self) -> None:
        """Drop the connection; the data plane and its apps keep running."""
        if self._channel is not None:
            self._channel.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with self._sync_lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    @property
    def channel(self) -> Channel:
        if self._channel is None or self._channel.closed:
            raise Unavailable("the data plane is not reachable")
        return self._channel

    # -- RuntimeControl ---------------------------------------------------------------------------

    def register(self, release: Release) -> None:
        self.channel.send({"op": "register", "release": release_out(release)})

    async def boot_check(self, release: Release, log: BuildLog) -> None:
        await self.channel.call("boot_check", release=release_out(release), on_log=log.write)

    async def run_release(self, release: Release, log: BuildLog) -> None:
        await self.channel.call("run_release", release=release_out(release), on_log=log.write)

    async def run_processes(self, current: list[Release]) -> None:
        await self.channel.call("run_processes", releases=[release_out(r) for r in current])

    async def retire(self, deployment_id: str) -> None:
        await self.channel.call("retire", deployment_id=deployment_id)

    def instances(self, deployment_id: str) -> InstanceState:
        """Asked synchronously (API handlers run in threads) on a socket of its own."""
        try:
            answer = self._call_sync({"op": "instances", "deployment_id": deployment_id})
        except (OSError, ChannelClosed):
            return InstanceState(instances=0, state="stopped", last_exit="data plane unreachable")
        return state_from_json(answer)

    def publish(self, snapshot: RoutingSnapshot) -> None:
        """A `SnapshotListener` (called in a worker thread): hand the new routing table to the
        data plane, encoded in the caller's thread and written by the loop, in call order."""
        message = {"op": "snapshot", "snapshot": snapshot_to_json(snapshot)}
        if self._loop is None or _on_loop(self._loop):
            self.channel.send(message)
        else:
            self.channel.send_threadsafe(self._loop, message)

    def set_certificates(self, certificates: Iterable[TlsCertificate]) -> None:
        """A TLS listener: the complete set the control plane issued (keys travel in memory)."""
        self.channel.send(
            {"op": "certificates", "certificates": [certificate_to_json(c) for c in certificates]}
        )

    def set_challenge(self, host: str, token: str, key_authorization: str | None) -> None:
        self.channel.send(
            {
                "op": "challenge",
                "host": host,
                "token": token,
                "key_authorization": key_authorization,
            }
        )

    def _call_sync(self, message: Message) -> Any:
        with self._sync_lock:
            for attempt in (1, 2):
                try:
                    sock = self._sync
                    if sock is None:
                        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        sock.settimeout(SYNC_TIMEOUT)
                        sock.connect(self.path)
                        self._sync = sock
                    self._sync_ids += 1
                    request_id = self._sync_ids
                    sock.sendall(frame({**message, "id": request_id}))
                    while True:
                        answer = parse(_recv_exact(sock, frame_length(_recv_exact(sock, 4))))
                        if answer.get("re") == request_id:
                            break
                except OSError:
                    if self._sync is not None:
                        self._sync.close()
                        self._sync = None
                    if attempt == 2:
                        raise
                    continue
                if "error" in answer:
                    raise error_from_json(answer["error"])
                return answer.get("ok")
        raise AssertionError("unreachable")


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    assert size >= 0 and HEADER.size == 4
    chunks = bytearray()
    while len(chunks) < size:
        piece = sock.recv(size - len(chunks))
        if not piece:
            raise ConnectionResetError("the data plane closed the connection")
        chunks += piece
    return bytes(chunks)


class RemoteBackends:
    """`phemeral.router.backends.Backends` for a router process beside the data plane's."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.upstreams: dict[str, Upstream] = {}
        self._counts: dict[str, list[int]] = {}
        self._logs: list[RuntimeLogLine] = []
        self._flusher: asyncio.Task[None] | None = None
        self.router: Any = None  # the worker's RouterServer, once `attach`ed
        self._early: list[Message] = []  # pushes that came before it

    async def subscribe(self) -> tuple[RoutingSnapshot, list[TlsCertificate], list[list[str]]]:
        """The data plane's current table, certificates and ACME answers; pushes follow."""
        self.channel.handler = self._pushed
        self._flusher = asyncio.create_task(self._flush_loop())
        state = await self.channel.call("subscribe")
        return (
            snapshot_from_json(state["snapshot"]),
            [certificate_from_json(c) for c in state["certificates"]],
            state["challenges"],
        )

    async def _pushed(self, channel: Channel, message: Message) -> None:
        op = message.get("op")
        if op == "gone":
            self.upstreams.pop(str(message["deployment_id"]), None)
            return
        router = self.router
        if router is None:
            self._early.append(message)
            return
        if op == "snapshot":
            router.update(snapshot_from_json(message["snapshot"]))
        elif op == "certificates":
            router.set_certificates([certificate_from_json(c) for c in message["certificates"]])
        elif op == "challenge":
            router.set_challenge(message["host"], message["token"], message["key_authorization"])

    async def attach(self, router: Any) -> None:
        """Route with ``router`` from now on, replaying what was pushed before it existed."""
        self.router = router
        early, self._early = self._early, []
        for message in early:
            await self._pushed(self.channel, message)

    async def ensure_running(self, deployment_id: str) -> Upstream:
        upstream = self.upstreams.get(deployment_id)
        if upstream is not None:
            return upstream
        upstream = upstream_from_json(await self.channel.call("wake", deployment_id=deployment_id))
        self.upstreams[deployment_id] = upstream
        return upstream

    def request_started(self, deployment_id: str) -> None:
        counts = self._counts.get(deployment_id)
        if counts is None:
            self._counts[deployment_id] = [1, 0]
        else:
            counts[0] += 1

    def request_finished(self, deployment_id: str) -> None:
        counts = self._counts.get(deployment_id)
        if counts is None:
            self._counts[deployment_id] = [0, 1]
        else:
            counts[1] += 1

    def write(self, lines: list[RuntimeLogLine]) -> None:
        """`RuntimeLogSink` for the worker's access log: lines go to the data plane's sink."""
        self._logs.extend(lines)

    def flush(self) -> None:
        if self.channel.closed:
            return
        if self._counts:
            counts, self._counts = self._counts, {}
            self.channel.send({"op": "activity", "counts": counts})
        if self._logs:
            lines, self._logs = self._logs, []
            self.channel.send({"op": "logs", "lines": lines_to_json(lines)})

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(ACTIVITY_INTERVAL)
            self.flush()

    async def close(self) -> None:
        self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
