"""The runtime: owns every application process, wakes deployments on demand, stops idle ones.

Tiers of a deployment while scaled to zero (``InstanceState.tier``):

- ``template``: a dormant template process (`zygote.py`, run by the release's own python in
  the app's sandbox) has imported and warmed the app and built its server configuration. A
  wake binds a listening socket here, passes it over the control socket, and the template
  forks the server(s) onto it: requests wait in the kernel backlog, none is refused.
- ``none`` (deep tier): nothing resident. A wake launches the template first (imports take
  hundreds of ms), then forks as above. Templates drop to this tier after `template_ttl`
  seconds dormant, or earlier when the host runs short of memory.

Custom start commands run as given (``sh -c``, ``$PORT`` set) and are ready once their port
accepts a connection; they have no template tier. Autodetected commands the template cannot
reproduce exactly (see `command.parse_server_command`) run the same way.

Every process runs sandboxed (`phemeral.sandbox`) under its deployment's cgroup when the host
allows it; records in ``{data_dir}/runtime/`` let a restarted platform find and replace what
an earlier run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phemeral import sandbox
from phemeral.errors import BootFailed, NotFound, PhemeralError, RuntimeFailure, Unavailable
from phemeral.models import BuildLog, InstanceState, Release, RuntimeLogSink, Upstream
from phemeral.runtime import procs
from phemeral.runtime.backoff import CrashHistory, may_start, record_crash, retry_after
from phemeral.runtime.capture import LogCapture
from phemeral.runtime.command import ServerCommand, parse_server_command
from phemeral.runtime.idle import DormantTemplate, is_idle, sweep_interval, templates_to_evict
from phemeral.runtime.template import TemplateGone, TemplateProcess
from phemeral.settings import Settings

log = logging.getLogger(__name__)

ZYGOTE_SOURCE = Path(__file__).with_name("zygote.py")
PROBE_INTERVAL = 0.005
MEMORY_CACHE_TTL = 5.0
RESPAWN_LIMIT = 10  # clean worker exits replaced per RESPAWN_WINDOW s before it is a crash
RESPAWN_WINDOW = 10.0
# What a shared framework template imports before any app (the first app's own imports are
# learned and added); modules that need app settings fail quietly and are skipped.
FRAMEWORK_PRELOAD = {
    "fastapi": ["fastapi", "fastapi.routing", "fastapi.applications", "pydantic"],
    "flask": ["flask", "werkzeug", "jinja2"],
    "django": ["django", "django.core.wsgi", "django.core.handlers.wsgi", "django.urls"],
}
SERVER_PRELOAD = {
    "uvicorn": [
        "uvicorn.main",
        "uvicorn.config",
        "uvicorn.server",
        "uvicorn.lifespan.on",
        "uvicorn.protocols.http.h11_impl",
        "anyio._backends._asyncio",
    ],
    "gunicorn": [
        "gunicorn.app.wsgiapp",
        "gunicorn.workers.sync",
        "gunicorn.glogging",
        "gunicorn.http.wsgi",
        "gunicorn.sock",
    ],
}
LISTEN_BACKLOG = 2048


@dataclass
class _Instance:
    """One running instance set: the server process(es) of a deployment."""

    id: str
    upstream: Upstream
    started_at: float
    pids: list[int] = field(default_factory=list)  # template children (template's pid view)
    process: asyncio.subprocess.Process | None = None  # custom command launcher
    logs: list[asyncio.Future[None]] = field(default_factory=list)
    exited: asyncio.Future[str] | None = None  # resolves with the exit reason
    stopping: bool = False
    template: TemplateProcess | None = None  # the template that forked ``pids``
    respawns: list[float] = field(default_factory=list)  # when workers were replaced


@dataclass
class _Deployment:
    release: Release
    idle_timeout: float
    server: ServerCommand | None
    state: str = "stopped"
    instance: _Instance | None = None
    template: TemplateProcess | None = None
    template_logs: list[asyncio.Future[None]] = field(default_factory=list)
    dormant_since: float | None = None
    waking: asyncio.Future[Upstream] | None = None
    stopping: asyncio.Task[None] | None = None
    in_flight: int = 0
    last_request_at: float = 0.0
    history: CrashHistory = field(default_factory=CrashHistory)
    last_exit: str | None = None
    last_wake_at: datetime | None = None
    last_wake_ms: float | None = None
    cgroup: sandbox.Cgroup | None = None
    oom_kills: int = 0
    restart_task: asyncio.Task[None] | None = None
    shared_key: str | None = None  # the shared framework template it was forked from
    template_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # load vs drop
    needs_refresh: bool = False  # its template predates the shared template's learned preload
    memory_cache: tuple[TemplateProcess, float, int] | None = None
    draining: list[_Instance] = field(default_factory=list)  # stopping, finishing requests


@dataclass
class _Shared:
    """A framework template shared by the deployments of one project with one dependency set."""

    key: str
    template: TemplateProcess
    venv: Path
    cgroup: sandbox.Cgroup | None
    users: set[str] = field(default_factory=set)
    logs: list[asyncio.Future[None]] = field(default_factory=list)
    learned: bool = False


class Runtime:
    """Starts, wakes, stops and supervises the instances of every registered deployment."""

    def __init__(
        self,
        settings: Settings,
        log_sink: RuntimeLogSink,
        *,
        template_ttl: float = 1800.0,
        low_memory_kb: int = 512 * 1024,
        stop_timeout: float = 10.0,
        drain_timeout: float = 30.0,
        use_templates: bool = True,
        share_templates: bool = True,
        log_rate: float | None = None,
        log_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.capture = LogCapture(log_sink, rate=log_rate, burst=log_burst, clock=clock)
        self.template_ttl = template_ttl
        self.low_memory_kb = low_memory_kb
        self.stop_timeout = stop_timeout
        self.drain_timeout = drain_timeout
        self.use_templates = use_templates
        self.share_templates = share_templates
        self._shared: dict[str, _Shared] = {}
        self._shared_starting: dict[str, asyncio.Future[_Shared]] = {}
        self.clock = clock
        self.state_dir = settings.data_dir / "runtime"
        self._deployments: dict[str, _Deployment] = {}
        self._boot_tees: dict[str, Callable[[str, str], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._use_bwrap: bool | None = None
        self._cgroups = sandbox.Cgroup.supported()
        digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:8]
        self._cgroup_prefix = f"rt{digest}-"
        self._zygote_path = self.state_dir / "zygote.py"

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Replace what an earlier run left behind, then start the idle sweep."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "records").mkdir(exist_ok=True)
        for path in (self.state_dir, self.settings.data_dir):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | 0o711)
        tmp = self._zygote_path.with_suffix(".tmp")
        shutil.copyfile(ZYGOTE_SOURCE, tmp)
        tmp.chmod(0o644)
        tmp.replace(self._zygote_path)
        self._use_bwrap = sandbox.resolve_use_bwrap(self.settings.sandbox)
        if not self._use_bwrap:
            log.warning("bubblewrap is not in use: apps run with a uid drop and rlimits only")
        await asyncio.to_thread(self._replace_leftovers)
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def close(self) -> None:
        """Stop every instance (gracefully, bounded) and every template."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await asyncio.gather(
            *(self._shutdown(d, drain=False) for d in list(self._deployments.values())),
            return_exceptions=True,
        )
        for shared in list(self._shared.values()):
            await self._close_shared(shared)
        self.capture.close()

    # -- registry ------------------------------------------------------------------------------

    def register(self, release: Release, *, idle_timeout: float | None = None) -> None:
        """Make a deployment wakeable (nothing starts until a request or `boot_check`)."""
        existing = self._deployments.get(release.deployment_id)
        timeout = idle_timeout if idle_timeout is not None else self.settings.idle_timeout
        if existing is not None:
            existing.idle_timeout = timeout
            return
        server = None
        if release.app is not None and self.use_templates:
            server = parse_server_command(release.start_command, 8000)
        self._deployments[release.deployment_id] = _Deployment(release, timeout, server)

    def set_idle_timeout(self, deployment_id: str, seconds: float) -> None:
        self._get(deployment_id).idle_timeout = seconds

    def _get(self, deployment_id: str) -> _Deployment:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} is not known to the runtime")
        return dep

    def instances(self, deployment_id: str) -> InstanceState:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            return InstanceState(instances=0, state="stopped")
        template_alive = dep.template is not None and dep.template.alive
        if dep.instance is not None:
            tier = "running"
        elif template_alive:
            tier = "template"
        else:
            tier = "none"
        state = dep.state
        if state == "stopped" and template_alive:
            state = "dormant"
        if state in ("crashed", "backoff") and may_start(dep.history, self.clock()):
            state = "crashed"
        idle_kb = self._template_memory_kb(dep) if template_alive else 0
        return InstanceState(
            instances=1 if dep.instance is not None and not dep.instance.stopping else 0,
            state=state,  # type: ignore[arg-type]
            tier=tier,  # type: ignore[arg-type]
            idle_memory_kb=idle_kb,
            last_wake_at=dep.last_wake_at,
            last_wake_ms=dep.last_wake_ms,
            restarts=dep.history.total_restarts,
            last_exit=dep.last_exit,
        )

    # -- requests ------------------------------------------------------------------------------

    def request_started(self, deployment_id: str) -> None:
        dep = self._deployments.get(deployment_id)
        if dep is not None:
            dep.in_flight += 1
            dep.last_request_at = self.clock()

    def request_finished(self, deployment_id: str) -> None:
        dep = self._deployments.get(deployment_id)
        if dep is not None:
            dep.in_flight = max(0, dep.in_flight - 1)
            dep.last_request_at = self.clock()

    async def ensure_running(self, deployment_id: str) -> Upstream:
        """The upstream of a running instance, waking one if needed (one wake per burst)."""
        dep = self._deployments.get(deployment_id)
        if dep is None:
            raise Unavailable(f"deployment {deployment_id} is not running here")
        instance = dep.instance
        if instance is not None and not instance.stopping:
            dep.last_request_at = self.clock()
            return instance.upstream
        if dep.waking is None:
            if not may_start(dep.history, self.clock()):
                wait = retry_after(dep.history, self.clock())
                raise Unavailable(
                    f"deployment {deployment_id} is crash-looping "
                    f"({dep.last_exit or 'crashed'}); next restart in {wait:.0f} s"
                )
            waking = asyncio.ensure_future(self._wake(dep))

            def woke(_future: asyncio.Future[Upstream]) -> None:
                if dep.waking is waking:
                    dep.waking = None

            dep.waking = waking
            waking.add_done_callback(woke)
        return await asyncio.shield(dep.waking)

    # -- health gate ---------------------------------------------------------------------------

    async def boot_check(self, release: Release, log: BuildLog) -> None:
        """Start the release and require an HTTP answer within the boot timeout.

        The app's output goes to the build log (stage ``boot``) as well as to its runtime log.
        On failure everything it started is stopped and BootFailed says why.
        """
        known = release.deployment_id in self._deployments
        self.register(release)
        dep = self._deployments[release.deployment_id]
        timeout = self.settings.boot_timeout

        def tee(stream: str, line: str) -> None:
            log.write("boot", line)

        self.capture.set_tee(release.deployment_id, tee)
        self._boot_tees[release.deployment_id] = tee
        log.write("boot", f"starting: {release.start_command}")
        started = time.monotonic()
        try:
            upstream = await asyncio.wait_for(self.ensure_running(release.deployment_id), timeout)
            remaining = max(0.1, timeout - (time.monotonic() - started))
            await self._probe_http(dep, upstream, remaining)
        except (TimeoutError, RuntimeFailure) as exc:
            reason = (
                f"the app did not answer on $PORT within {timeout:g} s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            await self._shutdown(dep, drain=False)
            self.capture.flush()
            log.write("boot", f"boot check failed: {reason}")
            if not known:
                self._deployments.pop(release.deployment_id, None)
            raise BootFailed(reason) from exc
        finally:
            self._boot_tees.pop(release.deployment_id, None)
            self.capture.set_tee(release.deployment_id, None)
        elapsed = (time.monotonic() - started) * 1000
        log.write("boot", f"the app answered on $PORT after {elapsed:.0f} ms")
        dep.last_request_at = self.clock()

    async def _probe_http(self, dep: _Deployment, upstream: Upstream, timeout: float) -> None:
        """Connect and send one GET; any HTTP answer passes. An exit fails it at once."""
        deadline = time.monotonic() + timeout
        request = (
            f"GET / HTTP/1.1\r\nHost: {dep.release.deployment_id}.{self.settings.base_domain}"
            "\r\nUser-Agent: phemeral-boot-check\r\nConnection: close\r\n\r\n"
        ).encode()
        while True:
            instance = dep.instance
            if instance is None or (instance.exited is not None and instance.exited.done()):
                raise BootFailed(f"the app exited during its boot check: {dep.last_exit}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(upstream.host, upstream.port), left
                )
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                writer.write(request)
                await writer.drain()
                waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(reader.read(12))]
                if instance.exited is not None:
                    waits.append(asyncio.ensure_future(asyncio.shield(instance.exited)))
                done, pending = await asyncio.wait(
                    waits,
                    timeout=max(0.01, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in pending:
                    task.cancel()
                if not done:
                    raise TimeoutError
                first = waits[0]
                if first in done and not first.exception() and first.result().startswith(b"HTTP/"):
                    return
                if first in done and first.exception() is None and not first.result():
                    await asyncio.sleep(0.05)  # closed without answering: try again
                    continue
                raise BootFailed(f"the app exited during its boot check: {dep.last_exit}")
            except OSError:
                await asyncio.sleep(0.05)
            finally:
                writer.close()

    # -- retire --------------------------------------------------------------------------------

    async def retire(self, deployment_id: str) -> None:
        """Drain, stop and forget a deployment (its template and cgroup too)."""
        dep = self._deployments.get(deployment_id)
        if dep is None:
            return
        await self._shutdown(dep, drain=True)
        self._deployments.pop(deployment_id, None)

    async def _shutdown(self, dep: _Deployment, *, drain: bool) -> None:
        if dep.restart_task is not None:
            dep.restart_task.cancel()
        if dep.waking is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(dep.waking), self.settings.boot_timeout)
        if drain:
            deadline = time.monotonic() + self.drain_timeout
            while dep.in_flight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await self._stop_instance(dep, reason="retired")
        await self._drop_template(dep)
        if dep.cgroup is not None:
            cgroup = dep.cgroup
            dep.cgroup = None
            await asyncio.to_thread(cgroup.remove)
        self._remove_record(dep.release.deployment_id)
        dep.state = "stopped"

    # -- waking --------------------------------------------------------------------------------

    async def _wake(self, dep: _Deployment) -> Upstream:
        # An instance still draining does not delay this one: a request that arrives during a
        # scale-down gets a fresh instance at once, beside the one finishing its requests.
        started = time.perf_counter()
        dep.state = "starting"
        try:
            if dep.server is not None:
                instance = await self._wake_template(dep)
            else:
                instance = await self._spawn_command(dep)
        except (PhemeralError, OSError) as exc:
            # A refused sandbox, a missing interpreter, no free port: the start failed.
            failure = exc if isinstance(exc, RuntimeFailure) else BootFailed(f"cannot start: {exc}")
            dep.state = "crashed"
            dep.last_exit = str(failure)
            self._system(dep, f"start failed: {failure}")
            if failure is exc:
                raise
            raise failure from exc
        except BaseException:
            dep.state = "stopped"
            raise
        dep.instance = instance
        dep.state = "running"
        dep.last_request_at = self.clock()
        dep.last_wake_ms = (time.perf_counter() - started) * 1000
        dep.last_wake_at = datetime.now(UTC)
        return instance.upstream

    def _env(self, dep: _Deployment, port: int) -> dict[str, str]:
        release = dep.release
        env = {
            "PATH": f"{release.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",  # noqa: S108 (the sandbox's private tmpfs)
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "VIRTUAL_ENV": str(release.venv),
            "PORT": str(port),
        }
        env.update(release.env)
        env["PORT"] = str(port)
        return env

    def _spec(self, dep: _Deployment, env: dict[str, str]) -> sandbox.SandboxSpec:
        release = dep.release
        ro = [release.path, release.venv, self._zygote_path, *_interpreter_dirs(release.venv)]
        return sandbox.SandboxSpec(
            uid=release.uid,
            ro_binds=tuple(dict.fromkeys(ro)),
            chdir=release.workdir,
            env=env,
            share_net=True,  # apps reach their databases and APIs; the port is ours to pass
            die_with_parent=False,  # apps outlive a platform restart; records find them
            memory_mb=self.settings.app_memory_mb,
            pids_max=self.settings.app_pids_max,
        )

    def _argv(self, dep: _Deployment, argv: list[str], env: dict[str, str]) -> list[str]:
        wrapped = sandbox.wrap(argv, self._spec(dep, env), use_bwrap=bool(self._use_bwrap))
        if dep.cgroup is not None:
            return [*dep.cgroup.join_argv(), *wrapped]
        return wrapped

    async def _ensure_cgroup(self, dep: _Deployment) -> None:
        if not self._cgroups or dep.cgroup is not None:
            return
        cgroup = sandbox.Cgroup(self._cgroup_prefix + dep.release.deployment_id)
        try:
            await asyncio.to_thread(
                cgroup.create,
                memory_mb=self.settings.app_memory_mb,
                pids_max=self.settings.app_pids_max,
                cpu_quota=1.0,
            )
        except OSError as exc:
            log.warning("no cgroup for %s: %s", dep.release.deployment_id, exc)
            return
        dep.cgroup = cgroup
        dep.oom_kills = _oom_kills(cgroup)

    async def _load_template(self, dep: _Deployment) -> TemplateProcess:
        assert dep.server is not None and dep.release.app is not None
        release = dep.release
        await self._ensure_cgroup(dep)
        env = self._env(dep, 8000)
        timeout = self.settings.boot_timeout
        for command in dep.server.pre_commands:
            await self._run_pre_command(dep, command, env, timeout)

        template = self._new_template(dep)
        if self.share_templates and release.lock_hash:
            return await self._fork_from_shared(dep, template, env, timeout)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            python = str(release.venv / "bin" / "python")
            zygote = str(self._zygote_path)
            process = await template.launch(
                lambda fd: self._argv(dep, [python, zygote, str(fd)], env), out_w, err_w
            )
        finally:
            os.close(out_w)
            os.close(err_w)
        dep.template_logs = [
            self.capture.attach(out_r, release.deployment_id, "template", "stdout", self._tee(dep)),
            self.capture.attach(err_r, release.deployment_id, "template", "stderr", self._tee(dep)),
        ]
        self._write_record(dep, process.pid)
        app = release.app
        assert app is not None
        spec = asdict(app)
        try:
            await template.load(spec, list(dep.server.argv), str(release.workdir), {}, timeout)
        except BootFailed:
            await template.close(timeout=2)
            await self.capture.drain(dep.template_logs, 1.0)
            raise
        dep.template = template
        dep.dormant_since = self.clock()
        self._background(self._watch_template(dep, template))
        return template

    def _new_template(self, dep: _Deployment) -> TemplateProcess:
        def on_exit(pid: int, code: int | None, sig: int | None) -> None:
            self._on_child_exit(dep, pid, code, sig)

        return TemplateProcess(on_exit)

    async def _fork_from_shared(
        self, dep: _Deployment, template: TemplateProcess, env: dict[str, str], timeout: float
    ) -> TemplateProcess:
        """A per-deployment template forked from its project's shared framework template.

        Only the app's own import and warm-up are private to it (a few MB); the framework pages
        stay shared. It moves into the deployment's cgroup before loading anything.
        """
        shared = await self._shared_for(dep)
        shared.users.add(dep.release.deployment_id)
        dep.shared_key = shared.key
        try:
            dep.template_logs = await self._fork_sub(dep, shared, template, env, timeout)
        except BootFailed:
            await self._release_shared(dep)
            raise
        if not shared.learned:
            shared.learned = True  # what this app imported, the next fork will not re-import
            self._background(self._learn(dep, shared, template.modules))
        dep.template = template
        dep.dormant_since = self.clock()
        self._background(self._watch_template(dep, template))
        return template

    async def _fork_sub(
        self,
        dep: _Deployment,
        shared: _Shared,
        template: TemplateProcess,
        env: dict[str, str],
        timeout: float,
    ) -> list[asyncio.Future[None]]:
        """Fork ``template`` from ``shared`` and load the app in it; its log pipes."""
        release, app, server = dep.release, dep.release.app, dep.server
        assert app is not None and server is not None
        did = release.deployment_id
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = await shared.template.fork_template(template, out_w, err_w)
        except (TemplateGone, TimeoutError) as exc:
            os.close(out_r)
            os.close(err_r)
            raise BootFailed("the shared template process ended") from exc
        finally:
            os.close(out_w)
            os.close(err_w)
        logs = [
            self.capture.attach(out_r, did, "template", "stdout", self._tee(dep)),
            self.capture.attach(err_r, did, "template", "stderr", self._tee(dep)),
        ]
        launcher = shared.template.host_pid
        template.host_pid = procs.host_pid(launcher, pid) if launcher is not None else None
        if dep.cgroup is not None and template.host_pid is not None:
            try:
                await asyncio.to_thread(dep.cgroup.attach, template.host_pid)
            except OSError as exc:
                log.warning("could not move %s's template into its cgroup: %s", did, exc)
        try:
            await template.load(
                asdict(app),
                list(server.argv),
                str(release.workdir),
                env,
                timeout,
                venv_from=str(shared.venv),
                venv_to=str(release.venv),
            )
        except BootFailed:
            await template.close(timeout=2)
            await self.capture.drain(logs, 1.0)
            raise
        return logs

    async def _learn(self, dep: _Deployment, shared: _Shared, modules: list[str]) -> None:
        """Preload what the first app imported into the shared template, then re-fork that
        first deployment's own template (while dormant) so it shares those pages too."""
        await shared.template.preload(modules)
        dep.needs_refresh = True
        await self._refresh(dep)

    async def _refresh(self, dep: _Deployment) -> None:
        """Re-fork a dormant deployment's template from its shared one (see `_learn`).

        The new template loads beside the old one, which keeps serving wakes meanwhile; the
        swap happens only if the deployment is still dormant then.
        """
        key = dep.shared_key
        shared = self._shared.get(key) if key else None
        old = dep.template
        if shared is None or not dep.needs_refresh or old is None:
            return
        dep.needs_refresh = False
        fresh = self._new_template(dep)
        try:
            logs = await self._fork_sub(
                dep, shared, fresh, self._env(dep, 8000), self.settings.boot_timeout
            )
        except BootFailed as exc:
            if shared.template.alive and dep.template is old:  # else it was dropped meanwhile
                log.warning("could not refresh %s's template: %s", dep.release.deployment_id, exc)
            return
        async with dep.template_lock:
            if dep.template is not old:  # dropped or replaced meanwhile
                await fresh.close(timeout=2)
                await self.capture.drain(logs, 1.0)
                return
            old_logs, dep.template_logs = dep.template_logs, logs
            dep.template = fresh
            self._background(self._watch_template(dep, fresh))
        instance = dep.instance
        if instance is None or instance.template is not old:
            await old.close(timeout=2)  # else it closes when the instance it forked is done
        await self.capture.drain(old_logs, 0.0 if instance is not None else 1.0)

    async def _shared_for(self, dep: _Deployment) -> _Shared:
        release = dep.release
        key = f"{release.project}:{release.lock_hash}:{release.python_version}"
        shared = self._shared.get(key)
        if shared is not None and shared.template.alive:
            return shared
        starting = self._shared_starting.get(key)
        if starting is None:
            starting = asyncio.ensure_future(self._launch_shared(key, dep))
            self._shared_starting[key] = starting
            starting.add_done_callback(lambda _f: self._shared_starting.pop(key, None))
        return await asyncio.shield(starting)

    async def _launch_shared(self, key: str, dep: _Deployment) -> _Shared:
        release, app = dep.release, dep.release.app
        assert app is not None
        cgroup = None
        if self._cgroups:
            name = self._cgroup_prefix + "s-" + hashlib.sha256(key.encode()).hexdigest()[:12]
            try:
                cgroup = await asyncio.to_thread(
                    sandbox.Cgroup(name).create,
                    memory_mb=self.settings.app_memory_mb,
                    pids_max=self.settings.app_pids_max,
                    cpu_quota=1.0,
                )
            except OSError as exc:
                log.warning("no cgroup for the shared template %s: %s", key, exc)
        releases_dir = release.path.parent
        env = self._env(dep, 8000)
        env = {k: env[k] for k in ("PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "VIRTUAL_ENV")}
        spec = sandbox.SandboxSpec(
            uid=release.uid,
            ro_binds=tuple(
                dict.fromkeys(
                    [
                        releases_dir,
                        release.venv,
                        self._zygote_path,
                        *_interpreter_dirs(release.venv),
                    ]
                )
            ),
            chdir=releases_dir,
            env=env,
            share_net=True,
            die_with_parent=False,
            memory_mb=self.settings.app_memory_mb,
            pids_max=self.settings.app_pids_max,
        )
        template = TemplateProcess(lambda _pid, _code, _sig: None)
        python = str(release.venv / "bin" / "python")
        zygote = str(self._zygote_path)

        def argv_for(fd: int) -> list[str]:
            wrapped = sandbox.wrap([python, zygote, str(fd)], spec, use_bwrap=bool(self._use_bwrap))
            return [*cgroup.join_argv(), *wrapped] if cgroup is not None else wrapped

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await template.launch(argv_for, out_w, err_w)
        finally:
            os.close(out_w)
            os.close(err_w)
        did = release.deployment_id
        shared = _Shared(key, template, release.venv, cgroup)
        shared.logs = [
            self.capture.attach(out_r, did, "shared-template", "stdout"),
            self.capture.attach(err_r, did, "shared-template", "stderr"),
        ]
        self._write_shared_record(shared, process.pid)
        await template.preload(
            FRAMEWORK_PRELOAD.get(app.framework, []) + SERVER_PRELOAD.get(app.server, []),
            timeout=self.settings.boot_timeout,
        )
        if not template.alive:
            await self._close_shared(shared)
            raise BootFailed("the shared template process ended while importing the framework")
        self._shared[key] = shared
        return shared

    async def _release_shared(self, dep: _Deployment) -> None:
        key, dep.shared_key = dep.shared_key, None
        shared = self._shared.get(key) if key else None
        if shared is None:
            return
        shared.users.discard(dep.release.deployment_id)
        if not shared.users:
            await self._close_shared(shared)

    async def _close_shared(self, shared: _Shared) -> None:
        if self._shared.get(shared.key) is shared:
            del self._shared[shared.key]
        await shared.template.close(timeout=self.stop_timeout)
        await self.capture.drain(shared.logs, 1.0)
        if shared.cgroup is not None:
            await asyncio.to_thread(shared.cgroup.remove)
        with contextlib.suppress(OSError):
            self._shared_record_path(shared.key).unlink()

    def shared_templates(self) -> list[dict[str, object]]:
        """The shared framework templates: key, deployments using them, their own USS in kB
        (the whole sandboxed tree, less the per-deployment templates forked from it)."""
        figures: list[dict[str, object]] = []
        for shared in self._shared.values():
            total = procs.tree_uss_kb(shared.template.host_pid or 0)
            for did in shared.users:
                dep = self._deployments.get(did)
                if dep is not None and dep.template is not None and dep.template.host_pid:
                    total -= procs.tree_uss_kb(dep.template.host_pid)
            figures.append(
                {"key": shared.key, "deployments": sorted(shared.users), "memory_kb": total}
            )
        return figures

    def _shared_record_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.state_dir / "records" / f"shared-{digest}.json"

    def _write_shared_record(self, shared: _Shared, pid: int) -> None:
        record = {
            "shared": shared.key,
            "pids": [{"pid": pid, "start_time": procs.start_time(pid)}],
            "cgroup": shared.cgroup.name if shared.cgroup is not None else None,
        }
        path = self._shared_record_path(shared.key)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    async def _watch_template(self, dep: _Deployment, template: TemplateProcess) -> None:
        assert template.closed is not None
        await template.closed
        if dep.template is template:
            dep.template = None
        instance = dep.instance
        if instance is not None and instance.template is template and not instance.stopping:
            self._instance_gone(dep, instance, "the app's template process ended")

    async def _run_pre_command(
        self, dep: _Deployment, command: str, env: dict[str, str], timeout: float
    ) -> None:
        self._system(dep, f"running: {command}")
        out_r, out_w = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(dep, ["/bin/sh", "-c", command], env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                start_new_session=True,
            )
        finally:
            os.close(out_w)
        done = self.capture.attach(
            out_r, dep.release.deployment_id, "release", "stdout", self._tee(dep)
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError as exc:
            procs.kill_tree(process.pid)
            await process.wait()
            raise BootFailed(f"`{command}` did not finish within {timeout:g} s") from exc
        await self.capture.drain([done], 1.0)
        if code != 0:
            raise BootFailed(f"`{command}` failed with exit code {code}")

    async def _wake_template(self, dep: _Deployment) -> _Instance:
        async with dep.template_lock:
            template = dep.template
            if template is None or not template.alive:
                template = await self._load_template(dep)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(LISTEN_BACKLOG)
            port = listener.getsockname()[1]
            instance_id = _instance_id()
            try:
                pids = await template.serve(
                    listener.fileno(), out_w, err_w, template.workers, instance_id
                )
            except TemplateGone as exc:
                os.close(out_r)
                os.close(err_r)
                raise BootFailed("the app's template process ended before it could serve") from exc
            except BaseException:
                os.close(out_r)
                os.close(err_r)
                raise
        finally:
            listener.close()
            os.close(out_w)
            os.close(err_w)
        instance = _Instance(
            instance_id,
            Upstream("127.0.0.1", port),
            self.clock(),
            pids=pids,
            exited=asyncio.get_running_loop().create_future(),
            template=template,
        )
        did = dep.release.deployment_id
        instance.logs = [
            self.capture.attach(out_r, did, instance_id, "stdout", self._tee(dep)),
            self.capture.attach(err_r, did, instance_id, "stderr", self._tee(dep)),
        ]
        dep.dormant_since = None
        return instance

    async def _spawn_command(self, dep: _Deployment) -> _Instance:
        await self._ensure_cgroup(dep)
        port = _free_port()
        env = self._env(dep, port)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(dep, ["/bin/sh", "-c", dep.release.start_command], env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self._write_record(dep, process.pid)
        instance_id = _instance_id()
        loop = asyncio.get_running_loop()
        instance = _Instance(
            instance_id,
            Upstream("127.0.0.1", port),
            self.clock(),
            process=process,
            exited=loop.create_future(),
        )
        did = dep.release.deployment_id
        instance.logs = [
            self.capture.attach(out_r, did, instance_id, "stdout", self._tee(dep)),
            self.capture.attach(err_r, did, instance_id, "stderr", self._tee(dep)),
        ]
        self._background(self._watch_command(dep, instance, process))
        deadline = time.monotonic() + self.settings.boot_timeout
        while True:
            if instance.exited is not None and instance.exited.done():
                raise BootFailed(f"the app exited before binding $PORT: {instance.exited.result()}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                await self._kill_instance(dep, instance)
                raise BootFailed(
                    f"the app did not accept connections on $PORT within "
                    f"{self.settings.boot_timeout:g} s"
                )
            await asyncio.sleep(PROBE_INTERVAL)
        return instance

    async def _watch_command(
        self, dep: _Deployment, instance: _Instance, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        # The launcher ended: anything left of its tree goes too.
        procs.kill_tree(process.pid)
        self._instance_gone(dep, instance, self._exit_reason(dep, code, None))

    # -- exits and crashes ---------------------------------------------------------------------

    def _exit_reason(self, dep: _Deployment, code: int | None, sig: int | None) -> str:
        if dep.cgroup is not None:
            kills = _oom_kills(dep.cgroup)
            if kills > dep.oom_kills:
                dep.oom_kills = kills
                return f"killed: memory limit exceeded ({self.settings.app_memory_mb} MB)"
        if sig is not None:
            with contextlib.suppress(ValueError):
                return f"killed by signal {signal.Signals(sig).name}"
            return f"killed by signal {sig}"
        if code is not None and code > 128 and code - 128 in (9, 15):
            return f"exited with code {code} (killed by signal {code - 128})"
        return f"exited with code {code}"

    def _on_child_exit(self, dep: _Deployment, pid: int, code: int | None, sig: int | None) -> None:
        candidates = [dep.instance, *dep.draining]
        instance = next((i for i in candidates if i is not None and pid in i.pids), None)
        if instance is None:
            return
        instance.pids.remove(pid)
        reason = self._exit_reason(dep, code, sig)
        if code == 0 and not instance.stopping and self._may_respawn(instance):
            # A worker that ends cleanly while serving (max requests reached) is replaced, as
            # gunicorn's arbiter and uvicorn's supervisor replace theirs.
            self._system(dep, f"instance {instance.id}: a worker exited cleanly; replacing it")
            self._background(self._respawn(dep, instance))
            return
        if instance.stopping:
            if not instance.pids and instance.exited is not None and not instance.exited.done():
                instance.exited.set_result(reason)
            return
        self._instance_gone(dep, instance, reason)

    def _may_respawn(self, instance: _Instance) -> bool:
        now = self.clock()
        instance.respawns = [t for t in instance.respawns if now - t < RESPAWN_WINDOW]
        if len(instance.respawns) >= RESPAWN_LIMIT:
            return False  # workers that keep ending are a crash loop, not max requests
        instance.respawns.append(now)
        return instance.template is not None and instance.template.alive

    async def _respawn(self, dep: _Deployment, instance: _Instance) -> None:
        assert instance.template is not None
        try:
            pids = await instance.template.respawn(instance.id)
        except (BootFailed, TemplateGone, TimeoutError):
            if not instance.stopping:
                self._instance_gone(dep, instance, "a worker exited and could not be replaced")
            return
        if instance.stopping:
            await instance.template.signal(pids, signal.SIGTERM)
        instance.pids.extend(pids)

    def _instance_gone(self, dep: _Deployment, instance: _Instance, reason: str) -> None:
        if instance.exited is not None and not instance.exited.done():
            instance.exited.set_result(reason)
        if instance.stopping or dep.instance is not instance:
            return
        # An unexpected exit: a crash. Stop what is left of the set, schedule the restart.
        instance.stopping = True
        dep.instance = None
        dep.last_exit = reason
        now = self.clock()
        dep.history = record_crash(dep.history, now, instance.started_at)
        wait = retry_after(dep.history, now)
        dep.state = "backoff" if wait > 0 else "crashed"
        self._system(
            dep,
            f"instance {instance.id} crashed ({reason}); restart #{dep.history.crashes} "
            + ("now" if wait == 0 else f"in {wait:.0f} s"),
        )
        loop = asyncio.get_running_loop()
        self._background(self._kill_instance(dep, instance))
        recently_used = now - dep.last_request_at < dep.idle_timeout or dep.in_flight > 0
        if recently_used and dep.waking is None:
            dep.restart_task = loop.create_task(self._restart_after(dep, wait))
        if not recently_used:
            dep.state = "stopped" if wait == 0 else "backoff"

    async def _restart_after(self, dep: _Deployment, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(RuntimeFailure):
            await self.ensure_running(dep.release.deployment_id)

    # -- stopping ------------------------------------------------------------------------------

    async def _stop_instance(self, dep: _Deployment, reason: str) -> None:
        while dep.stopping is not None:
            previous = dep.stopping
            await asyncio.shield(previous)
            if dep.stopping is previous:
                break
        instance = dep.instance
        if instance is None or instance.stopping:
            return
        stopping = asyncio.ensure_future(self._graceful_stop(dep, instance, reason))

        def stopped(_future: asyncio.Future[None]) -> None:
            if dep.stopping is stopping:
                dep.stopping = None

        dep.stopping = stopping
        stopping.add_done_callback(stopped)
        await asyncio.shield(stopping)

    async def _graceful_stop(self, dep: _Deployment, instance: _Instance, reason: str) -> None:
        instance.stopping = True
        dep.draining.append(instance)
        dep.state = "stopping"
        self._system(dep, f"stopping instance {instance.id} ({reason})")
        await self._signal_instance(dep, instance, signal.SIGTERM)
        if instance.exited is not None:
            try:
                await asyncio.wait_for(asyncio.shield(instance.exited), self.stop_timeout)
            except TimeoutError:
                self._system(dep, f"instance {instance.id} ignored SIGTERM; killing it")
        await self._kill_instance(dep, instance)
        dep.draining.remove(instance)
        if dep.instance is instance:
            dep.instance = None
        if dep.instance is not None:
            return  # a newer instance took over while this one drained
        dep.state = "stopped"
        if dep.template is not None and dep.template.alive:
            dep.dormant_since = self.clock()
            if dep.needs_refresh:
                self._background(self._refresh(dep))
        else:
            self._remove_record(dep.release.deployment_id)

    async def _signal_instance(self, dep: _Deployment, instance: _Instance, sig: int) -> None:
        if instance.pids and instance.template is not None:
            await instance.template.signal(instance.pids, sig)
        elif instance.process is not None and instance.process.returncode is None:
            # The app's processes, deepest first; the sandbox's own init ignores TERM.
            tree = procs.descendants(instance.process.pid)
            procs.signal_all(reversed(tree), sig)
            if sig == signal.SIGKILL:
                procs.signal_all([instance.process.pid], sig)

    async def _kill_instance(self, dep: _Deployment, instance: _Instance) -> None:
        """Kill the whole tree of an instance that is done (or did not stop in time)."""
        instance.stopping = True
        await self._signal_instance(dep, instance, signal.SIGKILL)
        if instance.process is not None:
            with contextlib.suppress(ProcessLookupError):
                instance.process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(instance.process.wait(), 5)
            alone = dep.instance is None or dep.instance is instance
            template_alive = dep.template is not None and dep.template.alive
            if dep.cgroup is not None and alone and not template_alive:
                await asyncio.to_thread(dep.cgroup.kill)
        elif instance.exited is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(instance.exited), 5)
        await self.capture.drain(instance.logs, 1.0)
        if dep.instance is instance:
            dep.instance = None
        old = instance.template
        if old is not None and old is not dep.template:
            await old.close(timeout=2)  # replaced by a refreshed template while it served
        elif old is not None:
            await old.release(instance.id)

    async def _drop_template(self, dep: _Deployment) -> None:
        async with dep.template_lock:
            template = dep.template
            dep.template = None
            dep.dormant_since = None
            if template is not None:
                await template.close(timeout=self.stop_timeout)
                await self.capture.drain(dep.template_logs, 1.0)
            if dep.cgroup is not None and dep.instance is None:
                cgroup, dep.cgroup = dep.cgroup, None  # deep tier: not even a cgroup is left
                await asyncio.to_thread(cgroup.remove)
            await self._release_shared(dep)
            if dep.instance is None:
                self._remove_record(dep.release.deployment_id)

    # -- idle sweep ----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            interval = sweep_interval(d.idle_timeout for d in self._deployments.values())
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("runtime idle sweep failed")

    async def sweep(self) -> None:
        """One pass: stop idle instances, drop templates to the deep tier when due."""
        now = self.clock()
        stops = []
        for dep in list(self._deployments.values()):
            instance = dep.instance
            if instance is None or instance.stopping or dep.stopping is not None:
                continue
            if is_idle(dep.last_request_at, dep.in_flight, now, dep.idle_timeout):
                stops.append(self._stop_instance(dep, "idle"))
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        dormant = [
            DormantTemplate(d.release.deployment_id, d.dormant_since, 0)
            for d in self._deployments.values()
            if d.template is not None and d.instance is None and d.dormant_since is not None
        ]
        if not dormant:
            return
        available = procs.mem_available_kb()
        if available is not None and available < self.low_memory_kb:
            dormant = [
                DormantTemplate(
                    d.deployment_id,
                    d.dormant_since,
                    self._template_memory_kb(self._deployments[d.deployment_id]),
                )
                for d in dormant
            ]
        for deployment_id in templates_to_evict(
            dormant, now, self.template_ttl, available, self.low_memory_kb
        ):
            found = self._deployments.get(deployment_id)
            if found is not None and found.instance is None and found.waking is None:
                dep = found
                self._system(dep, "template dropped (deep tier: nothing resident)")
                await self._drop_template(dep)

    async def drop_template(self, deployment_id: str) -> None:
        """Force the deep tier now (what `template_ttl` or memory pressure would do)."""
        dep = self._get(deployment_id)
        if dep.instance is None:
            await self._drop_template(dep)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- helpers -------------------------------------------------------------------------------

    def _tee(self, dep: _Deployment) -> Callable[[str, str], None] | None:
        return self._boot_tees.get(dep.release.deployment_id)

    def _system(self, dep: _Deployment, message: str) -> None:
        log.info("%s: %s", dep.release.deployment_id, message)
        self.capture.emit(
            dep.release.deployment_id, "-", "system", message, self._tee(dep), limited=False
        )

    def _template_memory_kb(self, dep: _Deployment) -> int:
        """USS of the deployment's template tree; read from /proc at most every few seconds
        (listing many deployments must not walk /proc for each)."""
        template = dep.template
        if template is None or template.host_pid is None:
            return 0
        now = self.clock()
        cached = dep.memory_cache
        if cached is not None and cached[0] is template and now - cached[1] < MEMORY_CACHE_TTL:
            return cached[2]
        kb = procs.tree_uss_kb(template.host_pid)
        dep.memory_cache = (template, now, kb)
        return kb

    # -- records: what a restarted platform must find ------------------------------------------

    def _record_path(self, deployment_id: str) -> Path:
        return self.state_dir / "records" / f"{deployment_id}.json"

    def _write_record(self, dep: _Deployment, pid: int) -> None:
        record = {
            "deployment_id": dep.release.deployment_id,
            "pids": [
                {"pid": pid, "start_time": procs.start_time(pid)},
                *self._read_record(dep.release.deployment_id).get("pids", []),
            ],
            "cgroup": dep.cgroup.name if dep.cgroup is not None else None,
        }
        path = self._record_path(dep.release.deployment_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    def _read_record(self, deployment_id: str) -> dict[str, Any]:
        try:
            data = json.loads(self._record_path(deployment_id).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remove_record(self, deployment_id: str) -> None:
        with contextlib.suppress(OSError):
            self._record_path(deployment_id).unlink()

    def _replace_leftovers(self) -> None:
        """Kill every process tree an earlier run recorded (and its cgroup), then forget it.

        Its log pipes died with that run, so clean replacement (the next request wakes a fresh
        instance) is what keeps one owner per process: no orphans, no duplicates.
        """
        for path in sorted((self.state_dir / "records").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = {}
            for entry in record.get("pids", []):
                pid, started = int(entry.get("pid", 0)), entry.get("start_time")
                if pid > 1 and procs.is_same_process(pid, started):
                    procs.kill_tree(pid)
            name = record.get("cgroup")
            if name and self._cgroups:
                with contextlib.suppress(OSError):
                    sandbox.Cgroup(name).remove()
            with contextlib.suppress(OSError):
                path.unlink()
        if self._cgroups:
            for name in _cgroup_names(self._cgroup_prefix):
                with contextlib.suppress(OSError):
                    sandbox.Cgroup(name).remove()
        # Templates and the servers they forked, even if their sandbox lost its launcher:
        # they all run this data dir's copy of the template script.
        procs.signal_all(procs.with_argument(str(self._zygote_path)), signal.SIGKILL)


def _instance_id() -> str:
    return "i-" + secrets.token_hex(4)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _interpreter_dirs(venv: Path) -> list[Path]:
    """The base interpreter's installation, which a venv links into (bound read-only)."""
    found: list[Path] = []
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = Path(value.strip()).resolve()
                found.append(home.parent if home.name == "bin" else home)
    except OSError:
        pass
    python = venv / "bin" / "python"
    with contextlib.suppress(OSError):
        real = python.resolve()
        prefix = real.parent.parent
        if prefix not in found and not str(prefix).startswith("/usr"):
            found.append(prefix)
    return [p for p in found if not (p == Path("/usr") or Path("/usr") in p.parents)]


def _oom_kills(cgroup: sandbox.Cgroup) -> int:
    for directory in cgroup.dirs():
        for name in ("memory.oom_control", "memory.events"):
            path = directory / name
            if not path.exists():
                continue
            with contextlib.suppress(OSError, ValueError):
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == "oom_kill":
                        return int(parts[1])
    return 0


def _cgroup_names(prefix: str) -> list[str]:
    root = sandbox.CGROUP_ROOT
    base = (
        root / "phemeral"
        if (root / "cgroup.controllers").exists()
        else root / "memory" / "phemeral"
    )
    try:
        return [p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    except OSError:
        return []
