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
from phemeral.runtime import procs
from phemeral.runtime.zygote import (
    EVENT_EXIT,
    EVENT_IMPORTED,
    OP_FORK_TEMPLATE,
    OP_LOAD,
    OP_LOCK,
    OP_PRELOAD,
    OP_RELEASE,
    OP_RESPAWN,
    OP_SERVE,
    OP_SIGNAL,
)

MAX_MESSAGE = 1 << 20
# What a template may say it imported (it runs the app's code: its word is bounded).
MAX_IMPORTED = 2000
MAX_MODULE_NAME = 200

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
        self.host_pid: int | None = None  # for memory figures and cgroup moves
        self.modules: list[str] = []  # modules the loaded app imported, outside its own code
        self.held: list[str] = []  # files of its directory the app keeps open from import
        self.resources: list[str] = []  # what the app's import opened and kept (fd targets)
        self.threads = 0  # threads the app's import started
        self.preload_app = False  # gunicorn --preload asked for
        self.lazy = False  # each server imports the app after the fork
        self.last_serve_ms: float | None = None  # its last serve's forks, timed in the template
        # called with the modules it imported after its servers did (`zygote`: learned imports)
        self.on_imported: Callable[[list[str]], None] | None = None
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
        self._attach(ours)
        self.host_pid = self.process.pid
        return self.process

    def _attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_loop())

    async def fork_template(
        self, child: TemplateProcess, stdout: int, stderr: int, timeout: float = 10
    ) -> int:
        """Fork a template of its own from this (shared) one; ``child`` drives it. Its pid."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            reply = await self.call(
                {"op": OP_FORK_TEMPLATE}, fds=[theirs.fileno(), stdout, stderr], timeout=timeout
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if not reply.get("ok"):
            ours.close()
            raise BootFailed(
                f"the shared template could not fork: {last_line(str(reply.get('error')))}"
            )
        child._attach(ours)
        return int(reply["pid"])

    async def preload(self, modules: Sequence[str], timeout: float = 60) -> list[str]:
        """Import these modules here (skipping the ones that fail); the failed ones."""
        with contextlib.suppress(TemplateGone, TimeoutError):
            reply = await self.call({"op": OP_PRELOAD, "modules": list(modules)}, timeout=timeout)
            return [str(m) for m in reply.get("failed", [])]
        return list(modules)

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
                    if message["event"] == EVENT_EXIT:
                        self.on_exit(
                            int(message["pid"]), message.get("code"), message.get("signal")
                        )
                    elif message["event"] == EVENT_IMPORTED and self.on_imported is not None:
                        self.on_imported(module_names(message.get("modules")))
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
        venv_from: str | None = None,
        venv_to: str | None = None,
        lazy: bool = False,
        preload: Sequence[str] = (),
    ) -> None:
        """Import the app (or, ``lazy``, only what it imports: ``preload``); BootFailed (with
        the template's traceback) if it cannot."""
        message = {
            "lazy": lazy,
            "preload": list(preload),
            "op": OP_LOAD,
            "spec": spec,
            "argv": list(argv),
            "workdir": workdir,
            "env": env,
            "venv_from": venv_from,
            "venv_to": venv_to,
        }
        try:
            reply = await self.call(message, timeout=timeout)
        except TimeoutError as exc:
            raise BootFailed(f"the app did not finish importing within {timeout:g} s") from exc
        except TemplateGone as exc:
            raise BootFailed("the app's process exited while importing the app") from exc
        if not reply.get("ok"):
            raise BootFailed(f"the app failed to load: {last_line(str(reply.get('error')))}")
        self.server = reply.get("server")
        self.workers = int(reply.get("workers") or 1)
        self.modules = [str(m) for m in reply.get("modules") or []]
        self.held = [str(f) for f in reply.get("held") or []]
        self.resources = [str(f) for f in reply.get("resources") or []]
        self.threads = int(reply.get("threads") or 0)
        self.preload_app = bool(reply.get("preload_app"))
        self.lazy = bool(reply.get("lazy"))

    @property
    def must_import_per_server(self) -> bool:
        """The app's import left connections, files or threads that forked servers must not
        share, and the command did not ask for gunicorn's --preload semantics."""
        return not self.lazy and not self.preload_app and bool(self.resources or self.threads)

    async def serve(
        self, listener: int, stdout: int, stderr: int, workers: int, instance: str = ""
    ) -> list[int]:
        """Fork ``workers`` servers on the bound, listening socket ``listener``; their pids.

        With an ``instance`` id the template keeps the fds, so `respawn` can replace a worker
        that exits cleanly (gunicorn ``--max-requests``) until `release`.
        """
        reply = await self.call(
            {"op": OP_SERVE, "workers": workers, "instance": instance},
            fds=[listener, stdout, stderr],
            timeout=10,
        )
        if not reply.get("ok"):
            raise BootFailed(
                f"the app's server did not start: {last_line(str(reply.get('error')))}"
            )
        forked = reply.get("forked_ms")
        self.last_serve_ms = float(forked) if isinstance(forked, (int, float)) else None
        return [int(p) for p in reply["pids"]]

    async def respawn(self, instance: str, workers: int = 1) -> list[int]:
        reply = await self.call(
            {"op": OP_RESPAWN, "instance": instance, "workers": workers}, timeout=10
        )
        if not reply.get("ok"):
            raise BootFailed(f"could not replace a worker: {last_line(str(reply.get('error')))}")
        return [int(p) for p in reply["pids"]]

    async def release(self, instance: str) -> None:
        with contextlib.suppress(TemplateGone, TimeoutError):
            await self.call({"op": OP_RELEASE, "instance": instance}, timeout=5)

    async def signal(self, pids: Sequence[int], sig: int) -> None:
        with contextlib.suppress(TemplateGone, TimeoutError):
            await self.call({"op": OP_SIGNAL, "pids": list(pids), "signal": int(sig)}, timeout=5)

    async def lock(self, ranges: Sequence[tuple[int, int]], lock: bool) -> int:
        """``mlock`` (``lock``) or ``munlock`` address ranges of the template (its hot set);
        the bytes done (0 if it is gone or the limit refused them)."""
        message = {"op": OP_LOCK, "ranges": [list(r) for r in ranges], "lock": lock}
        with contextlib.suppress(TemplateGone, TimeoutError):
            reply = await self.call(message, timeout=30)
            return int(reply.get("locked") or 0)
        return 0

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
                procs.kill_tree(self.process.pid)  # the sandbox and everything inside
                await self.process.wait()


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


def module_names(value: object) -> list[str]:
    """The module names in a template's ``imported`` event, bounded (`MAX_IMPORTED`)."""
    if not isinstance(value, list):
        return []
    names = [n for n in value if isinstance(n, str) and 0 < len(n) <= MAX_MODULE_NAME]
    return names[:MAX_IMPORTED]
