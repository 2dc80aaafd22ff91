"""A pre-loaded template process that forks ready-to-serve app servers on demand.

Run BY PATH with a release's own venv python (standard library only: it cannot import
phemeral, and it must run on every Python a release may use, 3.8 included). It is one file on
purpose, longer than the project's other modules: the runtime copies it into each run's folder
and the sandbox binds that one file read-only, so nothing else of the platform reaches an app::

    .venv/bin/python zygote.py CONTROL_FD

``CONTROL_FD`` is an inherited ``AF_UNIX``/``SOCK_SEQPACKET`` socket. Every message is one JSON
object; requests carry an ``id`` echoed in the reply, and file descriptors travel with
``SCM_RIGHTS``. Requests:

- ``{"op": "preload", "modules": [...]}``: import framework modules (shared template level).
- ``{"op": "load", "spec": {...}, "argv": [...], "workdir": ..., "env": {...}}``: import the
  app and the server named in ``spec`` (an AppSpec as JSON), parse the server command line in
  ``argv`` exactly as the server would and build its configuration (and, only when the app's
  environment sets ``PHEMERAL_WARMUP_PATH``, warm it with one request in a throwaway child).
  Replies ``{"ok": true, "workers": N}`` or ``{"ok": false, "error": ...}``.
- ``{"op": "fork_template"}`` + fds ``[control, stdout, stderr]``: fork a child that becomes a
  template of its own on the new control socket (a per-deployment template forked from a
  shared framework one). Replies ``{"ok": true, "pid": P}``.
- ``{"op": "serve", "workers": N, "instance": I}`` + fds ``[listener, stdout, stderr]``: fork
  N children that serve on the already bound and listening socket; with ``instance`` the fds are
  kept (duplicated) to replace workers later. Replies ``{"ok": true, "pids": [...],
  "forked_ms": F}`` (F: the forks' time in here, for the wake's trace).
- ``{"op": "respawn", "instance": I, "workers": N}``: fork N more servers on instance I's kept
  fds (a worker that exited cleanly, e.g. after ``--max-requests``). Replies with the pids.
- ``{"op": "release", "instance": I}``: close instance I's kept fds (it stopped).
- ``{"op": "signal", "pids": [...], "signal": S}``: signal served children and what they started
  (each leads its own process group).
- ``{"op": "lock", "ranges": [[start, length], ...], "lock": true}``: ``mlock`` (``false``:
  ``munlock``) those address ranges of this process (its hot set, kept in memory while the
  rest of it is paged out). Replies ``{"ok": true, "locked": BYTES}`` (ranges that fail are
  skipped).

The names are the ``OP_*`` constants below; `phemeral.runtime.template` sends exactly those.

Events (no ``id``): ``{"event": "exit", "pid": P, "code": C, "signal": S}`` when a child ends;
``{"event": "imported", "modules": [...]}`` when the template imported what its servers imported
after their fork (below). The template exits when its control socket closes; its children then
run on until stopped.

*Learned imports.* A server imports lazily what its first requests need (a loop module, a
framework's request-time modules): after every fork, at a cost in the wake's first answer. So
each server, as it exits, writes the modules it imported since its fork (outside the app's own
directory) to a pipe of its template's (one write of at most ``PIPE_BUF`` bytes), and the
template imports them too, so the next fork starts with them. An import that opens files or
starts threads here ends the learning for this template (the fork would share them).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import importlib
import json
import os
import pathlib
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

# The control protocol (see the module docstring); `phemeral.runtime.template` imports these.
OP_PRELOAD = "preload"
OP_LOAD = "load"
OP_FORK_TEMPLATE = "fork_template"
OP_SERVE = "serve"
OP_RESPAWN = "respawn"
OP_RELEASE = "release"
OP_SIGNAL = "signal"
OP_LOCK = "lock"
EVENT_EXIT = "exit"
EVENT_IMPORTED = "imported"

MAX_MESSAGE = 1 << 20
MAX_FDS = 8
# Imported lazily on a first real request (thread pools, lifespan); import them before forking.
ASGI_LAZY_MODULES = [
    "anyio._backends._asyncio",
    "anyio.to_thread",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",  # what `Server.run` imports to set its loop up
    "uvicorn.loops.asyncio",
]
# A server's report of what it imported after its fork: one write, atomic below PIPE_BUF.
REPORT_LIMIT = 4000


# Every descriptor the template itself holds (control sockets, its wake pipe and selector, fds
# received for instances). A forked child closes exactly these and nothing else: what the app
# opened (files, SQLite databases, sockets) stays open, as under the server's own fork.
PLATFORM_FDS: set[int] = set()


def track(*fds: int) -> None:
    PLATFORM_FDS.update(fds)


def close_fd(fd: int) -> None:
    """Close one of the template's own descriptors (and forget it)."""
    PLATFORM_FDS.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


class Terminated(BaseException):
    """SIGTERM reached a template: it stops its children before it exits."""


def _terminate(_signum: int, _frame: Any) -> None:
    raise Terminated


class Template:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        track(control.fileno())
        self.server: str | None = None
        self.app: Any = None
        self.config: Any = None  # uvicorn Config or gunicorn application object
        self.workers = 1
        self.worker_class: Any = None
        self.gunicorn_log: Any = None
        self.master: Any = None  # what gunicorn's hooks get as ``server`` (no arbiter here)
        # Each server imports the app after the fork (gunicorn without --preload), instead of
        # this template importing it once: for apps whose import opens connections or files or
        # starts threads, which forked copies must not share.
        self.lazy = False
        self.preload_app = False  # gunicorn --preload (or preload_app in its config) was asked
        self.uvicorn_app: tuple[str, bool, dict[str, Any]] | None = None  # target, factory, kwargs
        self.resources: list[str] = []  # what the app's import opened and kept
        self.threads_started = 0  # threads its import started (a fork does not copy them)
        self.workdir = ""
        self.children: set[int] = set()
        self.kept: dict[str, list[int]] = {}  # instance → [listener, stdout, stderr]
        # Seconds children get between TERM and KILL when this template goes; a template
        # forked from another one gets less than its parent gives it.
        self.grace = 8.0
        self.report_fd: int | None = None  # write end of the pipe servers report imports on
        self.known: frozenset[str] = frozenset()  # sys.modules as the last fork saw it
        self.learn_imports = True

    # -- messaging -------------------------------------------------------------------------

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            self.control.sendmsg([data], ancillary)
        except OSError as exc:  # the runtime went away; nothing left to tell
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise

    def receive(self) -> tuple[dict[str, Any] | None, list[int]]:
        size = array.array("i").itemsize * MAX_FDS
        data, ancdata, _flags, _addr = self.control.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(size))
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - (len(payload) % received.itemsize)])
                fds.extend(received)
        track(*fds)
        if not data:
            return None, fds
        return json.loads(data), fds

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        track(wake_r, wake_w)
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, _terminate)  # stop the children first, then go
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sel = selectors.DefaultSelector()
        with contextlib.suppress(AttributeError, NotImplementedError):
            track(sel.fileno())
        sel.register(self.control, selectors.EVENT_READ, "control")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        report_r, self.report_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        track(report_r, self.report_fd)
        sel.register(report_r, selectors.EVENT_READ, "report")
        try:
            while True:
                # A server's report comes before its exit is told: the runtime may page this
                # template out once it knows the server is gone.
                events = sorted(sel.select(), key=lambda event: event[0].data != "report")
                for key, _ in events:
                    if key.data == "report":
                        with contextlib.suppress(BlockingIOError):
                            self.learn(os.read(report_r, 1 << 16))
                        continue
                    if key.data == "signal":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                        self.reap()
                        continue
                    message, fds = self.receive()
                    if message is None:
                        self.shutdown()
                        return
                    self.dispatch(message, fds)
        except Terminated:
            self.shutdown()
        finally:
            sel.close()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            self.send({"event": EVENT_EXIT, "pid": pid, "code": code, "signal": sig})

    def dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            if op == OP_PRELOAD:
                reply["failed"] = preload(message.get("modules", []))
                reply["ok"] = True
                freeze()
            elif op == OP_LOAD:
                self.load(message)
                freeze()
                reply.update(ok=True, workers=self.workers, server=self.server)
                reply["modules"] = shareable_modules(message.get("workdir") or "")
                reply["held"] = held_files(message.get("workdir") or "")
                reply["resources"] = self.resources
                reply["threads"] = self.threads_started
                reply["preload_app"] = self.preload_app
                reply["lazy"] = self.lazy
            elif op == OP_FORK_TEMPLATE:
                reply.update(ok=True, pid=self.fork_template(fds))
            elif op == OP_SIGNAL:
                self.signal(message.get("pids") or [], int(message.get("signal", signal.SIGTERM)))
                reply["ok"] = True
            elif op == OP_SERVE:
                workers = int(message.get("workers") or self.workers)
                instance = str(message.get("instance") or "")
                if instance:  # kept to replace workers that exit cleanly (max requests)
                    self.kept[instance] = [os.dup(fd) for fd in fds[:3]]
                    track(*self.kept[instance])
                began = time.perf_counter()
                reply.update(ok=True, pids=self.serve(fds, workers))
                reply["forked_ms"] = round((time.perf_counter() - began) * 1000, 2)
            elif op == OP_RESPAWN:
                kept = self.kept.get(str(message.get("instance")))
                if kept is None:
                    raise RuntimeError("unknown instance")
                fds = [os.dup(fd) for fd in kept]
                track(*fds)
                reply.update(ok=True, pids=self.serve(fds, int(message.get("workers") or 1)))
            elif op == OP_LOCK:
                reply["locked"] = lock_ranges(message.get("ranges") or [], bool(message["lock"]))
                reply["ok"] = True
            elif op == OP_RELEASE:
                for fd in self.kept.pop(str(message.get("instance")), []):
                    close_fd(fd)
                reply["ok"] = True
            else:
                reply.update(ok=False, error=f"unknown operation {op!r}")
        except Terminated:
            raise
        except BaseException:  # report it to the runtime; the template itself stays usable
            reply.update(ok=False, error=traceback.format_exc())
        finally:
            for fd in fds:
                close_fd(fd)
        self.send(reply)

    def signal(self, pids: list[int], sig: int) -> None:
        """Signal served children and everything they started (each leads its own group)."""
        for pid in pids:
            if pid in self.children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, sig)
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)

    def learn(self, data: bytes) -> None:
        """Import what servers reported they imported after their fork (`report_imports`)."""
        names: list[str] = []
        for line in data.split(b"\n"):
            with contextlib.suppress(ValueError):
                got = json.loads(line)
                if isinstance(got, list):
                    names += [n for n in got if isinstance(n, str) and n.isascii()]
        names = [n for n in dict.fromkeys(names) if n not in sys.modules and len(n) < 200]
        if not names or not self.learn_imports:
            return
        descriptors, threads = open_descriptors(), threading_count()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGCHLD, signal.SIGTERM)}
        failed = set(preload(names))
        for sig, handler in handlers.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        if open_descriptors() != descriptors or threading_count() != threads:
            self.learn_imports = False
            print(
                "phemeral: importing what the app's server imported after its fork opened "
                "files or started threads in its template: no more imports are learned",
                file=sys.stderr,
                flush=True,
            )
        freeze()
        imported = [n for n in names if n not in failed]
        if imported:
            self.send({"event": EVENT_IMPORTED, "modules": imported})

    def shutdown(self) -> None:
        """The runtime is gone (or TERM came): stop every child, TERM then KILL."""
        import time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children = list(self.children)
        self.signal(children, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        self.signal(list(self.children), signal.SIGKILL)
        self.reap()

    # -- loading ---------------------------------------------------------------------------

    def load(self, message: dict[str, Any]) -> None:
        spec = message["spec"]
        workdir = message.get("workdir")
        venv_from, venv_to = message.get("venv_from"), message.get("venv_to")
        if venv_from and venv_to and venv_from != venv_to:
            # Forked from a template of another release with the same dependency set: later
            # imports come from this release's own venv.
            sys.path[:] = [
                venv_to + p[len(venv_from) :] if p.startswith(venv_from + "/") else p
                for p in sys.path
            ]
            sys.prefix = sys.exec_prefix = venv_to
        if workdir:
            self.workdir = workdir
            os.chdir(workdir)
            if workdir not in sys.path:
                sys.path.insert(0, workdir)
        for key, value in (message.get("env") or {}).items():
            os.environ[key] = value
        if spec.get("django_settings_module"):
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", spec["django_settings_module"])
        argv = [str(a) for a in message.get("argv") or []]
        self.lazy = bool(message.get("lazy"))
        preload(list(message.get("preload") or []))  # what an earlier load of it imported
        self.server = spec.get("server") or (
            "uvicorn" if spec.get("interface") == "asgi" else "gunicorn"
        )
        if self.server == "uvicorn":
            self.load_uvicorn(spec, argv)
        elif self.server == "gunicorn":
            self.load_gunicorn(spec, argv)
        elif self.server == "hypercorn":
            self.load_hypercorn(spec, argv)
        else:
            raise ValueError(f"unsupported server {self.server!r}")
        self.workdir = str(pathlib.Path.cwd())  # gunicorn's --chdir moves it

    def load_uvicorn(self, spec: dict[str, Any], argv: list[str]) -> None:
        uv_main = importlib.import_module("uvicorn.main")
        uv_config = importlib.import_module("uvicorn.config")
        import inspect

        args = [a for a in argv[1:] if a]
        try:
            ctx = uv_main.main.make_context("uvicorn", list(args), auto_envvar_prefix="UVICORN")
        except Exception:
            # The command names no app (or a detected one should be added): the detected one.
            if not spec.get("target") or spec["target"] in args:
                raise
            args.append(spec["target"])
            ctx = uv_main.main.make_context("uvicorn", args, auto_envvar_prefix="UVICORN")
        params = dict(ctx.params)
        if params.get("app_dir") is not None and params["app_dir"] not in sys.path:
            sys.path.insert(0, params["app_dir"])
        if params.get("headers"):
            params["headers"] = [h.split(":", 1) for h in params["headers"]]
        self.workers = int(params.get("workers") or os.environ.get("WEB_CONCURRENCY") or 1)
        target = str(params["app"])
        factory = bool(params.get("factory")) or (
            bool(spec.get("factory")) and target == spec.get("target")
        )
        accepted = set(inspect.signature(uv_config.Config.__init__).parameters)
        skip = {"self", "app", "host", "port", "uds", "fd", "workers", "factory", "app_dir"}
        skip |= {name for name in accepted if name.startswith("reload")}
        kwargs = {k: v for k, v in params.items() if k in accepted and k not in skip}
        self.uvicorn_app = (target, factory, kwargs)
        preload(ASGI_LAZY_MODULES)
        if self.lazy:
            self.config = None
            return
        app = self.import_app(lambda: import_target(target, factory))
        config = uv_config.Config(app, **kwargs)
        config.load()
        self.app, self.config = app, config
        self.warm(lambda path: warm_asgi(config.loaded_app, path))

    def load_gunicorn(self, spec: dict[str, Any], argv: list[str]) -> None:
        wsgiapp = importlib.import_module("gunicorn.app.wsgiapp")
        config_module = importlib.import_module("gunicorn.config")
        # Gunicorn reads WEB_CONCURRENCY and the working directory when its config module is
        # imported, which a shared template did before this app's environment and directory
        # were applied.
        defaults: dict[str, object] = {
            "workers": int(os.environ.get("WEB_CONCURRENCY") or 1),
            "chdir": str(pathlib.Path.cwd()),
        }
        for setting in getattr(config_module, "KNOWN_SETTINGS", []):
            if getattr(setting, "name", None) in defaults:
                setting.default = defaults[setting.name]
        args = [a for a in argv[1:] if a]

        def application_for(args: list[str]) -> Any:
            saved = sys.argv
            sys.argv = ["gunicorn", *args]
            try:
                return wsgiapp.WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn")
            finally:
                sys.argv = saved

        try:
            application = application_for(args)
        except SystemExit as exc:
            target = str(spec.get("target") or "") + ("()" if spec.get("factory") else "")
            if not spec.get("target") or target in args:
                raise RuntimeError(f"gunicorn refused its command line: {args}") from exc
            try:  # no app named by the command (nor its config file): the detected one
                application = application_for([*args, target])
            except SystemExit as again:
                raise RuntimeError(f"gunicorn refused its command line: {args}") from again
        self.preload_app = bool(application.cfg.preload_app)
        if not self.lazy:
            application.cfg.set("preload_app", True)
            self.app = self.import_app(application.wsgi)
        self.config = application
        self.workers = int(application.cfg.workers)
        # Import the worker, its HTTP parser and the logger now, not in every forked child.
        cfg = application.cfg
        self.worker_class = cfg.worker_class
        self.gunicorn_log = cfg.logger_class(cfg)
        preload(["gunicorn.http", "gunicorn.http.wsgi", "gunicorn.workers.base"])
        self.master = GunicornMaster(application, self.gunicorn_log, self.workers)
        cfg.on_starting(self.master)
        cfg.when_ready(self.master)
        if not self.lazy:
            self.warm(lambda path: warm_wsgi(self.app, path))

    def load_hypercorn(self, spec: dict[str, Any], argv: list[str]) -> None:
        """hypercorn's own parser and Config (its ``run`` captured, not called)."""
        hmain: Any = importlib.import_module("hypercorn.__main__")
        captured: list[Any] = []
        original = hmain.run

        def capture(config: Any) -> int:
            captured.append(config)
            return 0

        hmain.run = capture
        args = [a for a in argv[1:] if a]
        try:
            try:
                hmain.main(list(args))
            except SystemExit:
                if not spec.get("target") or spec["target"] in args:
                    raise
                hmain.main([*args, spec["target"]])
        except SystemExit as exc:
            raise RuntimeError(f"hypercorn refused its command line: {args}") from exc
        finally:
            hmain.run = original
        config = captured[0]
        self.config = config
        self.workers = max(1, int(config.workers or 1))
        worker_module = (
            "hypercorn.trio.run" if config.worker_class == "trio" else "hypercorn.asyncio.run"
        )
        preload([worker_module, "hypercorn.utils"])
        if not self.lazy:  # hypercorn's workers import it themselves; this fills sys.modules
            utils = importlib.import_module("hypercorn.utils")
            self.app = self.import_app(
                lambda: utils.load_application(config.application_path, config.wsgi_max_body_size)
            )

    def import_app(self, load: Callable[[], Any]) -> Any:
        """Import the app here; note what its import opened and kept, and threads it started."""
        before = open_descriptors()
        threads = threading_count()
        app = load()
        after = open_descriptors()
        self.resources = sorted(target for fd, target in after.items() if before.get(fd) != target)
        self.threads_started = max(0, threading_count() - threads)
        return app

    def warm(self, request: Callable[[str], None]) -> None:
        """The opt-in warm-up (``PHEMERAL_WARMUP_PATH`` in the app's environment): one request
        to that path, in a throwaway child, so whatever it connects or opens dies with it; the
        modules it imported lazily are then imported here, so forks share them."""
        path = os.environ.get("PHEMERAL_WARMUP_PATH", "").strip()
        if not path:
            return
        if not path.startswith("/"):
            path = "/" + path
        before = set(sys.modules)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(read_end)
                request(path)
                names = json.dumps(sorted(set(sys.modules) - before)).encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(names)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                flush_and_exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reply:
            data = reply.read()
        os.waitpid(pid, 0)
        with contextlib.suppress(ValueError):
            preload([str(name) for name in json.loads(data or b"[]")])

    # -- forking ---------------------------------------------------------------------------

    def fork_template(self, fds: list[int]) -> int:
        control_fd, out_fd, err_fd = fds[:3]

        def template() -> int:
            after_fork(self.control, out_fd, err_fd, keep=[control_fd])
            child = Template(socket.socket(fileno=control_fd))
            child.grace = 4.0
            child.run()
            return 0

        pid = fork_child(template)
        self.children.add(pid)
        return pid

    def serve(self, fds: list[int], workers: int) -> list[int]:
        if self.server is None:
            raise RuntimeError("no app is loaded in this template")
        listen_fd, out_fd, err_fd = fds[:3]
        pids = []
        if len(self.known) != len(sys.modules):
            self.known = frozenset(sys.modules)
        known, report_fd, workdir = self.known, self.report_fd, self.workdir
        keep = [listen_fd] if report_fd is None else [listen_fd, report_fd]

        reported: list[bool] = []

        def report() -> None:
            if report_fd is not None and not reported:
                reported.append(True)
                report_imports(report_fd, known, workdir)

        def worker() -> int:
            os.setpgid(0, 0)
            after_fork(self.control, out_fd, err_fd, keep=keep)
            if report_fd is not None:
                # A server that ends by the signal itself (uvicorn raises the SIGTERM it caught
                # again once it has shut down) reports first, then dies by it all the same.
                signal.signal(signal.SIGTERM, lambda sig, _frame: die_by(sig, report))
            serving_environment(listen_fd, self.workdir)
            if self.server == "uvicorn":
                config = self.config
                if config is None:  # lazy: the app is imported here, as uvicorn does
                    assert self.uvicorn_app is not None
                    target, factory, kwargs = self.uvicorn_app
                    uv_config = importlib.import_module("uvicorn.config")
                    config = uv_config.Config(import_target(target, factory), **kwargs)
                serve_uvicorn(config, listen_fd)
                return 0
            if self.server == "hypercorn":
                serve_hypercorn(self.config, listen_fd)
                return 0
            return serve_gunicorn(
                self.config, self.app, listen_fd, self.worker_class, self.gunicorn_log, self.master
            )

        for _ in range(max(1, workers)):
            pid = fork_child(worker, exit_status=True, before_exit=report)
            self.children.add(pid)
            pids.append(pid)
        return pids


def lock_ranges(ranges: list[list[int]], lock: bool) -> int:
    """``mlock`` (or ``munlock``) each ``[start, length]`` of this process; the bytes done."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.mlock if lock else libc.munlock
    call.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    done = 0
    for start, length in ranges:
        if call(int(start), int(length)) == 0:
            done += int(length)
    return done


def freeze() -> None:
    """Move every object to the permanent generation: the collector then never walks (and
    so never copies) the pages a fork shares with this template."""
    import gc

    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()


def preload(modules: list[str]) -> list[str]:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a module that needs app settings cannot be preloaded; skip it
            failed.append(name)
    return failed


def shareable_modules(workdir: str, ordered: bool = False) -> list[str]:
    """Imported modules that are not the app's own (a shared template may preload them); by
    name, or ``ordered`` as they were imported."""
    names = []
    root = str(pathlib.Path(workdir).absolute()) + os.sep if workdir else None
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name == "__main__" or not path:
            continue
        if root and str(pathlib.Path(path).absolute()).startswith(root):
            continue
        names.append(name)
    return names if ordered else sorted(names)


def held_files(workdir: str) -> list[str]:
    """Files of the app's directory the app keeps open (opened while it was imported)."""
    if not workdir:
        return []
    prefix = workdir.rstrip("/") + "/"
    held = set()
    try:
        names = [p.name for p in pathlib.Path("/proc/self/fd").iterdir()]
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) < 3 or int(name) in PLATFORM_FDS:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")  # noqa: PTH115 (none on 3.8)
        except OSError:
            continue
        if target.startswith(prefix):
            held.add(target)
    return sorted(held)


def open_descriptors() -> dict[int, str]:
    """Every descriptor that is not the template's own, and what it is."""
    found: dict[int, str] = {}
    try:
        names = [p.name for p in pathlib.Path("/proc/self/fd").iterdir()]
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) < 3 or int(name) in PLATFORM_FDS:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")  # noqa: PTH115 (none on 3.8)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not target.startswith("/proc/"):
            found[int(name)] = target
    return found


def threading_count() -> int:
    threading = sys.modules.get("threading")
    return int(threading.active_count()) if threading is not None else 1


def import_target(target: str, factory: bool) -> Any:
    module_name, _, attr = target.partition(":")
    module: Any = importlib.import_module(module_name)
    obj = module
    for part in (attr or "app").split("."):
        obj = getattr(obj, part)
    return obj() if factory else obj


def warm_asgi(app: Any, path: str) -> None:
    """One in-process request to ``path`` through the full stack."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"phemeral-warmup")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def once() -> None:
        await app(scope, receive, send)

    # Warming is best effort: a failing warm-up must not fail the boot.
    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(once(), 5))
    asyncio.set_event_loop(None)


def warm_wsgi(app: Any, path: str) -> None:
    import io

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    try:
        result = app(environ, lambda status, headers, exc_info=None: None)
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
    except Exception:  # noqa: S110 (best effort, as for ASGI)
        pass


def after_fork(control: socket.socket, out_fd: int, err_fd: int, keep: list[int]) -> None:
    """Post-fork hygiene: own signals, own output, fresh randomness, and none of the template's
    own descriptors (`PLATFORM_FDS`). Every other inherited descriptor is the app's (opened while
    it was imported) and stays open, as under the server's own fork (gunicorn ``--preload``)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    # The socket object must never close its number later: by then the app may own it.
    with contextlib.suppress(OSError):
        PLATFORM_FDS.add(control.detach())
    keep_set = {0, 1, 2, *keep}
    for fd in sorted(PLATFORM_FDS - keep_set):
        close_fd(fd)
    PLATFORM_FDS.clear()
    random.seed()


def serving_environment(listen_fd: int, workdir: str) -> None:
    """What a server process sees: ``$PORT`` is the port it listens on (the template was loaded
    before that port existed), and it runs in the app's directory."""
    with socket.socket(fileno=os.dup(listen_fd)) as probe:
        name = probe.getsockname()
    if isinstance(name, tuple) and len(name) >= 2:
        os.environ["PORT"] = str(name[1])
    if workdir:
        os.chdir(workdir)
        os.environ["PWD"] = workdir


class GunicornMaster:
    """What gunicorn's server hooks (``on_starting``, ``when_ready``, ``pre_fork``,
    ``post_fork``) receive as ``server``: the template stands in for the arbiter."""

    def __init__(self, application: Any, log: Any, workers: int) -> None:
        self.app = application
        self.cfg = application.cfg
        self.log = log
        self.pid = os.getpid()
        self.num_workers = workers
        self.WORKERS: dict[int, Any] = {}
        self.LISTENERS: list[Any] = []
        self.address: list[Any] = []
        self.timeout = application.cfg.timeout
        self.proc_name = application.cfg.proc_name


def serve_uvicorn(config: Any, listen_fd: int) -> None:
    server_mod = importlib.import_module("uvicorn.server")
    sock = socket.socket(fileno=listen_fd)
    server = server_mod.Server(config)
    server.run(sockets=[sock])


def serve_hypercorn(config: Any, listen_fd: int) -> None:
    """One hypercorn worker (its configured worker class) on the passed socket."""
    config.bind = [f"fd://{listen_fd}"]
    config.insecure_bind = []
    config.quic_bind = []
    config.certfile = config.keyfile = None
    sockets = config.create_sockets()
    if config.worker_class == "trio":
        worker = importlib.import_module("hypercorn.trio.run").trio_worker
    elif config.worker_class == "uvloop":
        worker = importlib.import_module("hypercorn.asyncio.run").uvloop_worker
    else:
        worker = importlib.import_module("hypercorn.asyncio.run").asyncio_worker
    worker(config, sockets)


def serve_gunicorn(
    application: Any, app: Any, listen_fd: int, worker_class: Any, log: Any, master: Any
) -> int:
    """One gunicorn worker (the configured worker class) on the passed socket, no arbiter."""
    sock_mod = importlib.import_module("gunicorn.sock")
    cfg = application.cfg
    probe = socket.socket(fileno=os.dup(listen_fd))
    family = probe.family
    name = probe.getsockname()
    probe.close()
    if family == socket.AF_UNIX:
        listener = sock_mod.UnixSocket(name, cfg, log, fd=listen_fd)
    elif family == socket.AF_INET6:
        listener = sock_mod.TCP6Socket(name, cfg, log, fd=listen_fd)
    else:
        listener = sock_mod.TCPSocket(name, cfg, log, fd=listen_fd)
    if app is not None:  # imported by the template; else the worker loads it (no --preload)
        application.wsgi = lambda: app
    worker = worker_class(1, os.getppid(), [listener], application, cfg.timeout / 2.0, cfg, log)
    master.pid = os.getppid()
    master.LISTENERS = [listener]
    master.WORKERS = {os.getpid(): worker}
    cfg.post_fork(master, worker)
    worker.pid = os.getpid()
    worker.init_process()
    return 0


def fork_child(
    body: Callable[[], int],
    *,
    exit_status: bool = False,
    before_exit: Callable[[], None] | None = None,
) -> int:
    """Fork; the child runs ``body`` and exits with what it returns, never returning here.

    If it raises, the child prints the traceback and exits 1; with ``exit_status`` a
    SystemExit ends it with its own code instead (as a server's own exit does).
    ``before_exit`` runs in the child last (its failures are ignored).
    """
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0
    try:
        code = body()
    except BaseException as exc:
        if exit_status and isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            traceback.print_exc()
            code = 1
    finally:
        if before_exit is not None:
            with contextlib.suppress(BaseException):
                before_exit()
        flush_and_exit(code)


def die_by(sig: int, before: Callable[[], None]) -> None:
    """``before`` (its failures ignored), then end by ``sig`` with its default action."""
    with contextlib.suppress(BaseException):
        before()
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def report_imports(fd: int, known: frozenset[str], workdir: str) -> None:
    """In a server, as it exits: the modules it imported since its fork, outside the app's own
    directory, in import order, written to its template in one write (the first ones that fit
    in `REPORT_LIMIT` bytes: the rest are learned at a later exit)."""
    names = [n for n in shareable_modules(workdir, ordered=True) if n not in known]
    if not names:
        return
    data = json.dumps(names).encode()
    while len(data) > REPORT_LIMIT and names:
        names = names[: len(names) * 3 // 4]
        data = json.dumps(names).encode()
    if names:
        os.write(fd, data + b"\n")


def flush_and_exit(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code if isinstance(code, int) else 1)


CHECK_MARK = "@@phemeral-check@@"


def check(message: dict[str, Any]) -> int:
    """``zygote.py --check MESSAGE``: load the app as a template would, report, exit (the
    build's verify step: it sees what boot will see)."""
    ours, _theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    template = Template(ours)
    try:
        template.load(message)
    except BaseException:
        traceback.print_exc()
        return 3
    report = {"server": template.server, "workers": template.workers}
    print(CHECK_MARK + json.dumps(report), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--check":
        return check(json.loads(argv[2]))
    if len(argv) != 2:
        print("usage: zygote.py CONTROL_FD | zygote.py --check MESSAGE", file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(argv[1]))
    Template(control).run()
    return 0


if __name__ == "__main__":
    # Its own directory must not shadow the app's modules.
    here = pathlib.Path(__file__).resolve().parent
    if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == here:
        del sys.path[0]
    sys.exit(main(sys.argv))
