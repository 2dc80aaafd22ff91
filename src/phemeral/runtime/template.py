"""The runtime's side of a template process (`zygote.py`): launch it, load the app, fork servers.

One `TemplateProcess` per deployment. Its control socket is an ``AF_UNIX``/``SOCK_SEQPACKET``
socketpair; replies are matched to requests by id, ``exit`` events go to a callback.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Callable, Sequence
from typing import Any

from phemeral.errors import BootFailed

MAX_MESSAGE = 1 << 20

ExitCallback = Callable[[int, int | None, int | None], None]  # (pid, code, signal)


class TemplateGone(Exception):
    """The template process ended (or never started); its control socket is closed."""


class TemplateProcess:
    """A launched ``zygote.py``; `launch` it, then `load`, then `serve` as often as needed."""

    def __init__(self, on_exit: ExitCallback) -> None:
        self.on_exit = on_exit
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.server: str | None = None
        self.workers = 1
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] | None = None

    @property
    def alive(self) -> bool:
        return self.sock is not None and self.closed is not None and not self.closed.done()

    async def launch(
        self, argv_for: Callable[[int], Sequence[str]], stdout: int, stderr: int
    ) -> asyncio.subprocess.Process:
        """Start the template; ``argv_for(fd)`` builds its (sandboxed) command line."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv_for(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._reader = asyncio.create_task(self._read_loop())
        return self.process

    async def _read_loop(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.sock, MAX_MESSAGE)
                if not data:
                    break
                message = json.loads(data)
                if "event" in message:
                    if message["event"] == "exit":
                        self.on_exit(
                            int(message["pid"]), message.get("code"), message.get("signal")
                        )
                    continue
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (OSError, ValueError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(TemplateGone("the template process ended"))
            self._pending.clear()
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(None)

    async def call(
        self, message: dict[str, Any], fds: Sequence[int] = (), timeout: float | None = None
    ) -> dict[str, Any]:
        if not self.alive or self.sock is None:
            raise TemplateGone("the template process is not running")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        data = json.dumps({**message, "id": request_id}).encode()
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            self.sock.sendmsg([data], ancillary)
        except OSError as exc:
            self._pending.pop(request_id, None)
            raise TemplateGone(f"the template process is not reachable: {exc}") from exc
        return await asyncio.wait_for(future, timeout)

    async def load(
        self,
        spec: dict[str, Any],
        argv: Sequence[str],
        workdir: str,
        env: dict[str, str],
        timeout: float,
    ) -> None:
        """Import and warm the app; BootFailed (with the template's traceback) if it cannot."""
        try:
            reply = await self.call(
                {"op": "load", "spec": spec, "argv": list(argv), "workdir": workdir, "env": env},
                timeout=timeout,
            )
        except TimeoutError as exc:
            raise BootFailed(f"the app did not finish importing within {timeout:g} s") from exc
        except TemplateGone as exc:
            raise BootFailed("the app's process exited while importing the app") from exc
        if not reply.get("ok"):
            raise BootFailed(f"the app failed to load: {last_line(str(reply.get('error')))}")
        self.server = reply.get("server")
        self.workers = int(reply.get("workers") or 1)

    async def serve(self, listener: int, stdout: int, stderr: int, workers: int) -> list[int]:
        """Fork ``workers`` servers on the bound, listening socket ``listener``; their pids."""
        reply = await self.call(
            {"op": "serve", "workers": workers}, fds=[listener, stdout, stderr], timeout=10
        )
        if not reply.get("ok"):
            raise BootFailed(
                f"the app's server did not start: {last_line(str(reply.get('error')))}"
            )
        return [int(p) for p in reply["pids"]]

    async def signal(self, pids: Sequence[int], sig: int) -> None:
        with contextlib.suppress(TemplateGone, TimeoutError):
            await self.call({"op": "signal", "pids": list(pids), "signal": int(sig)}, timeout=5)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the control socket (the template stops its children and exits), then reap it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"
