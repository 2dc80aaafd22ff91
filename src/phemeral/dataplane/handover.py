"""An upgrade without a refused connection: a new `phemeral serve` takes over from the running one.

The serving data plane advertises itself in ``{data_dir}/dataplane/serving.json`` (0600: its
pid, start time and the path of its handover socket, a Unix socket in its private 0700 folder).
A data plane that starts on the same data dir while that process lives:

1. connects and sends ``takeover``; the old one answers with the deployments that have a
   running instance and, as ``SCM_RIGHTS``, its listening sockets (the same sockets, so the
   kernel's accept queue is shared: nothing is refused, nothing queued is lost);
2. starts its runtime and wakes those deployments (its own instances, beside the old ones:
   `phemeral.runtime.runs` keeps the two runs apart), then routes on the received sockets;
3. sends ``stop``: the old one stops accepting, answers what is still in flight on its open
   connections with ``Connection: close`` (`RouterServer.drain`), then shuts down as on SIGTERM;
4. once the old process exited, starts the control plane and the extra processes (one of each
   per data dir) and replaces whatever the old run left (normally nothing).

If the new process dies before ``stop``, the old one keeps serving as if nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phemeral.runtime import procs, runs

log = logging.getLogger(__name__)

STATE_FILE = "serving.json"
MAX_MESSAGE = 1 << 20
CONNECT_TIMEOUT = 5.0
EXIT_POLL = 0.05


def state_path(data_dir: Path) -> Path:
    return data_dir / "dataplane" / STATE_FILE


def advertise(data_dir: Path, handover_socket: str) -> None:
    """Name this process as the one serving ``data_dir`` (atomically, 0600)."""
    pid = os.getpid()
    body = {"pid": pid, "start_time": procs.start_time(pid), "socket": handover_socket}
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{STATE_FILE}.{pid}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(body, file)
    tmp.replace(path)


def withdraw(data_dir: Path) -> None:
    """Remove the advertisement if it is still this process's (a successor replaced it)."""
    path = state_path(data_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def serving(data_dir: Path) -> dict[str, Any] | None:
    """The advertisement of a live data plane of ``data_dir`` (not this process), or None."""
    try:
        body = json.loads(state_path(data_dir).read_text())
        pid, started = int(body["pid"]), body["start_time"]
        str(body["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not isinstance(started, int) or not runs.running(pid, started):
        return None
    return dict(body)


@dataclass
class Predecessor:
    """The data plane this one takes over from (its sockets already received)."""

    pid: int
    start_time: int
    running: list[str]
    sockets: list[socket.socket]
    conn: socket.socket
    taken: list[socket.socket] = field(default_factory=list)
    stopped: bool = False  # told to stop: from then on it goes, whatever happens here

    def socket_for(self, port: int) -> socket.socket | None:
        """The received listening socket on ``port`` (each is handed out once)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                if sock.getsockname()[1] == port and sock not in self.taken:
                    self.taken.append(sock)
                    sock.setblocking(False)
                    return sock
        return None

    def alive(self) -> bool:
        return runs.running(self.pid, self.start_time)

    def stop(self) -> None:
        """Tell it to stop accepting and shut down; unused received sockets are closed."""
        migrate_queued_connections()
        self.stopped = True
        with contextlib.suppress(OSError):
            self.conn.sendall(b"stop\n")
        for sock in self.sockets:
            if sock not in self.taken:
                sock.close()

    async def exited(self) -> None:
        while self.alive():
            await asyncio.sleep(EXIT_POLL)
        self.conn.close()

    def abandon(self) -> None:
        """This process failed before `stop`: the old one keeps serving."""
        if self.stopped:
            return
        for sock in self.sockets:
            if sock not in self.taken:
                sock.close()
        self.conn.close()


def migrate_queued_connections() -> None:
    """Let connections queued on a closing ``SO_REUSEPORT`` listener (the old router workers')
    move to another listener of the port instead of being reset (``tcp_migrate_req``, Linux
    5.14+; it changes nothing else). Best effort: without it a few may be reset."""
    path = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    with contextlib.suppress(OSError):
        if path.read_text().strip() != "1":
            path.write_text("1")


def take_over(data_dir: Path) -> Predecessor | None:
    """Ask the live data plane of ``data_dir`` for its sockets (blocking; None if there is
    none, or it does not answer)."""
    found = serving(data_dir)
    if found is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        conn.connect(str(found["socket"]))
        conn.sendall(b"takeover\n")
        message, fds, _flags, _address = socket.recv_fds(conn, MAX_MESSAGE, 4)
        body = json.loads(message)
        sockets = [socket.socket(fileno=fd) for fd in fds]
        conn.settimeout(None)
    except (OSError, ValueError) as exc:
        conn.close()
        log.warning("the running data plane (pid %s) did not hand over: %s", found["pid"], exc)
        return None
    running = [str(d) for d in body.get("running", [])]
    return Predecessor(int(found["pid"]), int(found["start_time"]), running, sockets, conn)


class HandoverServer:
    """The running data plane's side: hands its sockets to one successor, then, on ``stop``,
    calls ``on_stop`` (which begins this process's shutdown)."""

    def __init__(
        self,
        path: str,
        sockets: list[socket.socket],
        running: Callable[[], list[str]],
        on_stop: Callable[[], None],
    ) -> None:
        self.path = path
        self.sockets = sockets
        self.running = running
        self.on_stop = on_stop
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(self.path).unlink(missing_ok=True)
        listener.bind(self.path)
        Path(self.path).chmod(0o600)
        listener.listen(4)
        listener.setblocking(False)
        self._listener = listener
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            try:
                if await self._handle(loop, conn):
                    return
            except OSError as exc:
                log.warning("a handover failed: %s", exc)
            finally:
                conn.close()

    async def _handle(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bool:
        conn.setblocking(False)
        if await _read_line(loop, conn) != b"takeover":
            return False
        body = json.dumps({"running": self.running()}).encode()
        conn.setblocking(True)
        socket.send_fds(conn, [body], [s.fileno() for s in self.sockets])
        conn.setblocking(False)
        log.info("handed the public sockets over; serving until the new data plane is ready")
        if await _read_line(loop, conn) != b"stop":
            log.warning("the new data plane went away before taking over; still serving")
            return False
        self.on_stop()
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            self._listener.close()
            Path(self.path).unlink(missing_ok=True)


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await loop.sock_recv(conn, 64)
        if not chunk:
            return b""
        data += chunk
        if len(data) > 64:
            return b""
    return data.strip()
