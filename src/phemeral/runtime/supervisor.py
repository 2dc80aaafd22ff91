"""The runtime: owns every application process, wakes deployments on demand, stops idle ones.

Tiers of a deployment while scaled to zero (``InstanceState.tier``):

- ``template``: a dormant template process (`zygote.py`, run by the release's own python in
  the app's sandbox) has imported and warmed the app and built its server configuration. A
  wake binds a listening socket here, passes it over the control socket, and the template
  forks the server(s) onto it: requests wait in the kernel backlog, none is refused.
- ``paged``: the same dormant template, its memory paged out to swap after
  ``Settings.page_out_after`` s unused (`paging`). A wake forks it the same way; the child
  reads back from swap the pages its first requests touch (tens of ms).
- ``none`` (deep tier): nothing resident. A wake launches the template first (imports take
  hundreds of ms), then forks as above. Age alone never drops a template to this tier: the
  sweep drops the least recently used dormant templates when together they keep more than the
  template budget (``Settings.warm_budget_mb``), or when the host runs short of memory.

What a dormant deployment keeps (`footprint`: PSS of its processes and its share of a shared
template) is measured by the idle sweep, off the event loop, and cached (`ledger`); `instances`
reports it with the expected wake time of its tier (`idle.expected_wake_ms` over the recent
wakes).

A start command that is a gunicorn or uvicorn command line (autodetected, declared or custom;
see `command.parse_server_command`) wakes through the template. Any other command runs as given
(``sh -c``, ``$PORT`` set) and is ready once its port accepts a connection; it has no template
tier. ``InstanceState.wake_path`` says which (``template`` or ``command``).

Every process runs sandboxed (`phemeral.sandbox`) under its deployment's cgroup when the host
allows it; records in ``{data_dir}/runtime/`` let a restarted platform find and replace what
an earlier run left behind.

`Runtime` is the facade; the parts are `instances` (instance sets), `app_template` and
`sharing` (the template tier), `paged_tier`, `rehearsal`, `ledger` (idle costs, last uses),
`launch` (sandbox argv), `records`, `bootcheck`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable

from phemeral import network, sandbox
from phemeral.errors import BootFailed, NotFound, PhemeralError, RuntimeFailure, Unavailable
from phemeral.models import BuildLog, InstanceState, Release, RuntimeLogSink, Upstream
from phemeral.runtime import procs, runs
from phemeral.runtime.app_template import AppTemplates
from phemeral.runtime.appview import AppViews
from phemeral.runtime.backoff import may_start, retry_after
from phemeral.runtime.bootcheck import answer_note, probe_http, uses_django
from phemeral.runtime.capture import LogCapture
from phemeral.runtime.command import parse_server_command
from phemeral.runtime.deployment import DeploymentRuntime, Supervision, is_dormant
from phemeral.runtime.idle import (
    DEFAULT_WAKE_MS,
    WAKE_SAMPLES,
    DormantTemplate,
    WarmCandidate,
    expected_wake_ms,
    is_idle,
    sweep_interval,
    templates_to_evict,
    templates_to_warm,
)
from phemeral.runtime.instances import Instances
from phemeral.runtime.launch import ZYGOTE_SOURCE, Launcher
from phemeral.runtime.ledger import Ledger
from phemeral.runtime.loopwatch import LoopWatch
from phemeral.runtime.paged_tier import PagedTier, swap_room_kb
from phemeral.runtime.processes import ExtraProcesses
from phemeral.runtime.records import Records
from phemeral.runtime.rehearsal import Rehearsals
from phemeral.runtime.release_phase import run_release_command
from phemeral.runtime.sharing import SharedTemplate, SharedTemplates
from phemeral.runtime.template import TemplateProcess
from phemeral.runtime.usage import UsageFile
from phemeral.runtime.waketrace import SLOW_WAKE_MS, WakeTrace, describe
from phemeral.settings import Settings

log = logging.getLogger(__name__)

# A wake's time runs to the end of the first request answered after it; longer than this (s),
# the request was not the one that woke it (a boot check's wake, say): not a sample.
WAKE_ANSWER_LIMIT = 60.0


class Runtime:
    """Starts, wakes, stops and supervises the instances of every registered deployment."""

    def __init__(
        self,
        settings: Settings,
        log_sink: RuntimeLogSink,
        *,
        low_memory_kb: int = 512 * 1024,
        stop_timeout: float = 10.0,
        drain_timeout: float = 30.0,
        use_templates: bool = True,
        share_templates: bool = True,
        writable_app_dir: bool = True,
        log_rate: float | None = None,
        log_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.capture = LogCapture(log_sink, rate=log_rate, burst=log_burst, clock=clock)
        self.low_memory_kb = low_memory_kb
        self.stop_timeout = stop_timeout
        self.drain_timeout = drain_timeout
        self.use_templates = use_templates
        self.share_templates = share_templates
        self.clock = clock
        self.state_dir = settings.data_dir / "runtime"
        # This process's own records, views, template script and cgroups (`runs`).
        self.run = runs.current_run()
        self.run_dir = runs.runs_dir(self.state_dir) / self.run
        self._zygote_path = self.run_dir / "zygote.py"
        self._launcher = Launcher(
            settings,
            self._zygote_path,
            cgroup_prefix=runs.cgroup_prefix(settings.data_dir, self.run),
        )
        self._records = Records(self.run_dir)
        self._views = AppViews(self.run_dir / "views", enabled=writable_app_dir)
        self._replacing: asyncio.Task[None] | None = None
        self._sup = Supervision(
            settings, self.capture, self._launcher, self._records, clock, stop_timeout, self._views
        )
        self._deployments = self._sup.deployments
        self._sharing = SharedTemplates(self._sup)
        self._templates = AppTemplates(
            self._sup,
            self._sharing,
            share=share_templates,
            on_child_exit=self._child_exited,
            on_ended=self._template_ended,
        )
        self._instances = Instances(self._sup, self._templates, self.ensure_running)
        self._sweeper: asyncio.Task[None] | None = None
        self._extras = ExtraProcesses(self._sup)
        self._ledger = Ledger(self._sup, self._sharing, UsageFile(self.state_dir / "usage.json"))
        self._warmer: asyncio.Task[None] | None = None
        self._sweeping = asyncio.Lock()
        self._wakes: dict[str, deque[float]] = {
            kind: deque(maxlen=WAKE_SAMPLES) for kind in DEFAULT_WAKE_MS
        }
        # a wake whose first answer is awaited: its trace (kind, phases, start)
        self._answer_awaited: dict[str, WakeTrace] = {}
        self.loop_watch = LoopWatch()
        self.template_budget_kb = template_budget_kb(settings)
        self._paged = PagedTier(
            self._sup,
            self._sharing,
            self._instances,
            forget_sample=self._ledger.forget_sample,
            dormant=self._dormant,
            last_used=self._ledger.last_used,
            idle_estimate_kb=self._ledger.estimate_kb,
        )
        self._rehearsals = Rehearsals(
            self._sup,
            self._instances,
            self._paged,
            ensure_running=self.ensure_running,
            forget_answer=self._forget_answer,
            dormant=self._dormant,
            last_used=self._ledger.last_used,
        )

    @property
    def _shared(self) -> dict[str, SharedTemplate]:
        return self._sharing.by_key

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Make this run's folder, then start the idle sweep; what earlier runs left is
        replaced in the background (`runs`: nothing of theirs collides with this run's)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._launcher.use_bwrap = sandbox.resolve_use_bwrap(self.settings.sandbox)
        if not self._launcher.use_bwrap:
            log.warning("bubblewrap is not in use: apps run with a uid drop and rlimits only")
        self._launcher.networks = await asyncio.to_thread(
            network.resolve, self.settings.network, self.settings.data_dir
        )
        cgroups = self._launcher.cgroups
        if self.run_dir.exists():  # an earlier runtime of this very process
            await asyncio.to_thread(
                runs.replace, self.state_dir, self.settings.data_dir, self.run, cgroups
            )
        self._records.dir.mkdir(parents=True, exist_ok=True)
        for path in (self.run_dir, self.run_dir.parent, self.state_dir, self.settings.data_dir):
            with contextlib.suppress(OSError):  # app uids reach the template script
                path.chmod(path.stat().st_mode | 0o711)
        tmp = self._zygote_path.with_suffix(".tmp")
        shutil.copyfile(ZYGOTE_SOURCE, tmp)
        tmp.chmod(0o644)
        tmp.replace(self._zygote_path)
        self._replacing = asyncio.create_task(self._replace_earlier_runs())
        await self._ledger.load()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        self.loop_watch.start()

    async def _replace_earlier_runs(self) -> None:
        state, data, cgroups = self.state_dir, self.settings.data_dir, self._launcher.cgroups
        try:
            await asyncio.to_thread(runs.replace_legacy, state, data, cgroups)
        except Exception:
            log.exception("could not replace what an earlier platform left")
        await asyncio.gather(
            *(runs.wait_and_replace(state, data, r, cgroups) for r in runs.others(state, self.run))
        )

    async def replaced(self) -> None:
        """Wait until what earlier runs left is gone (those still running: until they exit)."""
        if self._replacing is not None:
            await asyncio.shield(self._replacing)

    async def close(self, grace: float | None = None) -> None:
        """Stop every instance and template (SIGTERM, then SIGKILL after ``grace`` seconds,
        default `stop_timeout`), all at once; remove this run."""
        if grace is not None:
            self._sup.stop_timeout = min(self._sup.stop_timeout, grace)
        if self._replacing is not None:
            self._replacing.cancel()  # a run still alive is replaced by the next start
            with contextlib.suppress(asyncio.CancelledError):
                await self._replacing
            self._replacing = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.loop_watch.close()
        await self._rehearsals.close()
        if self._warmer is not None:
            self._warmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmer
            self._warmer = None
        try:
            self._ledger.record(self.clock(), force=True)
        except Exception:
            log.exception("could not save when deployments were last used")
        await self._extras.close()
        await asyncio.gather(
            *(self._shutdown(d, drain=False) for d in list(self._deployments.values())),
            return_exceptions=True,
        )
        await self._sharing.close_all()
        await asyncio.to_thread(self._views.clean)
        # whatever namespace is left of this data dir (and its nft table)
        await asyncio.to_thread(network.close_for_data_dir, self.settings.data_dir)
        await asyncio.to_thread(
            runs.replace, self.state_dir, self.settings.data_dir, self.run, self._launcher.cgroups
        )
        self.capture.close()
        self._paged.close()

    # -- registry ------------------------------------------------------------------------------

    def register(self, release: Release, *, idle_timeout: float | None = None) -> None:
        """Make a deployment wakeable (nothing starts until a request or `boot_check`)."""
        existing = self._deployments.get(release.deployment_id)
        timeout = idle_timeout if idle_timeout is not None else self._idle_timeout(release)
        if existing is not None:
            existing.idle_timeout = timeout
            return
        server = None
        if self.use_templates:  # autodetected, declared or custom: the command line decides
            env = self._launcher.env(release, 8000)
            server = parse_server_command(release.start_command, 8000, env)
        dep = DeploymentRuntime(release, timeout, server)
        dep.learned_imports = self._ledger.learned_imports(release.deployment_id)
        self._deployments[release.deployment_id] = dep

    def _idle_timeout(self, release: Release) -> float:
        """The release's own (phemeral.toml ``idle_timeout``), else the platform's."""
        return release.idle_timeout or self.settings.idle_timeout

    async def run_release(self, release: Release, log: BuildLog) -> None:
        """The release phase of a new deployment (`release_phase`); raises ReleaseFailed."""
        timeout = release.release_timeout or self.settings.release_timeout
        await run_release_command(self._launcher, release, log, timeout, self._views)

    async def run_processes(self, current: list[Release]) -> None:
        """Run the extra processes of exactly these releases (each environment's current
        deployment): new ones start first, then the others drain and stop (`processes`)."""
        await self._extras.run_for(current)

    def set_idle_timeout(self, deployment_id: str, seconds: float) -> None:
        self._get(deployment_id).idle_timeout = seconds

    def _get(self, deployment_id: str) -> DeploymentRuntime:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} is not known to the runtime")
        return dep

    def instances(self, deployment_id: str) -> InstanceState:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            return InstanceState(instances=0, state="stopped")
        processes = self._extras.states(deployment_id)
        template_alive = dep.template is not None and dep.template.alive
        if dep.instance is not None:
            tier = "running"
        elif template_alive:
            tier = "paged" if dep.paged else "template"
        else:
            tier = "none"
        state = dep.state
        if state == "stopped" and template_alive:
            state = "dormant"
        if state in ("crashed", "backoff") and may_start(dep.history, self.clock()):
            state = "crashed"
        cost = self._ledger.cost(dep) if template_alive else None
        dormant = tier in ("template", "paged")
        return InstanceState(
            instances=1 if dep.instance is not None and not dep.instance.stopping else 0,
            state=state,  # type: ignore[arg-type]
            tier=tier,  # type: ignore[arg-type]
            idle_memory_kb=cost.own_uss_kb if cost is not None and dormant else 0,
            idle_pss_kb=cost.pss_kb if cost is not None and dormant else 0,
            idle_swap_kb=cost.own_swap_kb if cost is not None and dormant else 0,
            hot_set_in=tier == "paged" and self._hot_in(dep),
            expected_wake_ms=None if tier == "running" else self.expected_wake_ms(dep),
            last_wake_at=dep.last_wake_at,
            last_wake_ms=dep.last_wake_ms,
            last_wake_phases=dep.last_wake_phases,
            restarts=dep.history.total_restarts,
            last_exit=dep.last_exit,
            wake_path="template" if dep.server is not None else "command",
            processes=processes,
        )

    def wake_kind(self, dep: DeploymentRuntime) -> str:
        """How its next wake starts: ``template`` (a dormant template forks), ``hot`` (one
        paged out to swap but for its hot set forks), ``paged`` (one paged out whole forks
        once the reads are submitted), ``deep`` (the template loads first) or ``command`` (the
        start command runs as given)."""
        if dep.server is None:
            return "command"
        if dep.template is None or not dep.template.alive:
            return "deep"
        if dep.paged:
            return "hot" if self._hot_in(dep) else "paged"
        return "template"

    @staticmethod
    def _hot_in(dep: DeploymentRuntime) -> bool:
        return dep.paged and dep.hot_in and PagedTier.hot_set(dep) is not None

    def expected_wake_ms(self, dep: DeploymentRuntime) -> float:
        """The median of the recent wakes of its kind, platform-wide (a default before any)."""
        kind = self.wake_kind(dep)
        return expected_wake_ms(list(self._wakes[kind]), DEFAULT_WAKE_MS[kind])

    def shared_templates(self) -> list[dict[str, object]]:
        """The shared framework templates: key, deployments using them, their own USS in kB
        (the whole sandboxed tree, less the per-deployment templates forked from it)."""
        return self._sharing.figures()

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
            trace = self._answer_awaited.pop(deployment_id, None)
            if trace is not None:  # the first answer since a wake: how long that wake took
                self._answered(dep, trace)
            dep.last_request_at = self.clock()

    def running_deployments(self) -> list[str]:
        """The deployments with an instance serving now (a successor wakes them first)."""
        return [
            d
            for d, dep in self._deployments.items()
            if dep.instance is not None and not dep.instance.stopping
        ]

    def running_upstream(self, deployment_id: str) -> Upstream | None:
        """The upstream of the instance serving now (None while none does); never wakes."""
        dep = self._deployments.get(deployment_id)
        instance = dep.instance if dep is not None else None
        if instance is None or instance.stopping:
            return None
        return instance.upstream

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
            kind = self.wake_kind(dep)  # what the wake starts from, for the expected wake
            trace = dep.wake_trace = WakeTrace(kind)
            self._paged.note_wake()
            waking = asyncio.ensure_future(
                self._paged.wake(dep) if kind == "paged" else self._instances.wake(dep)
            )

            def woke(future: asyncio.Future[Upstream]) -> None:
                if dep.waking is waking:
                    dep.waking = None
                if not future.cancelled() and future.exception() is None:
                    self._answer_awaited[deployment_id] = trace

            dep.waking = waking
            waking.add_done_callback(woke)
        return await asyncio.shield(dep.waking)

    def _forget_answer(self, deployment_id: str) -> None:
        """The wake's first answer is not awaited (a rehearsal's is not a user's)."""
        self._answer_awaited.pop(deployment_id, None)

    def _answered(self, dep: DeploymentRuntime, trace: WakeTrace) -> None:
        """A wake's first answer went out: its figure joins its kind's, its phases are kept
        with the deployment's state, and a slow one is logged whole."""
        trace.mark("answer")
        trace.stalled_ms = self.loop_watch.stalled_ms(trace.started, time.perf_counter())
        dep.last_wake_phases = trace.figures()
        ms = trace.total_ms
        if ms <= WAKE_ANSWER_LIMIT * 1000:
            self._wakes[trace.kind].append(ms)
        if ms >= SLOW_WAKE_MS:
            log.warning("slow wake of %s: %s", dep.release.deployment_id, describe(trace))

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
        self._sup.boot_tees[release.deployment_id] = tee
        log.write("boot", f"starting: {release.start_command}")
        started = time.monotonic()
        try:
            upstream = await asyncio.wait_for(self.ensure_running(release.deployment_id), timeout)
            remaining = max(0.1, timeout - (time.monotonic() - started))
            host = f"{release.deployment_id}.{self.settings.base_domain}"
            status = await probe_http(dep, upstream, remaining, host, release.health_check_path)
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
            self._sup.boot_tees.pop(release.deployment_id, None)
            self.capture.set_tee(release.deployment_id, None)
            self._answer_awaited.pop(release.deployment_id, None)  # no request woke it
        elapsed = (time.monotonic() - started) * 1000
        answer = f" ({status})" if status is not None else ""
        log.write("boot", f"the app answered on $PORT{answer} after {elapsed:.0f} ms")
        note = answer_note(status, host, self.settings.base_domain, uses_django(release))
        if note is not None:
            log.write("boot", note)
        dep.last_request_at = self.clock()

    # -- retire --------------------------------------------------------------------------------

    async def retire(self, deployment_id: str) -> None:
        """Drain, stop and forget a deployment (its template and cgroup too)."""
        dep = self._deployments.get(deployment_id)
        if dep is None:
            return
        await self._shutdown(dep, drain=True)
        self._deployments.pop(deployment_id, None)
        self._answer_awaited.pop(deployment_id, None)
        self._ledger.forget(deployment_id)

    async def _shutdown(self, dep: DeploymentRuntime, *, drain: bool) -> None:
        if dep.restart_task is not None:
            dep.restart_task.cancel()
        if dep.waking is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(dep.waking), self.settings.boot_timeout)
        if drain:
            deadline = time.monotonic() + self.drain_timeout
            while dep.in_flight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await self._instances.stop(dep, reason="retired")
        await self._templates.drop(dep)
        gone = self._views.drop(dep.release.deployment_id)
        if gone is not None:
            await self._sup.forget_dirs([gone])
        if dep.cgroup is not None:
            cgroup = dep.cgroup
            dep.cgroup = None
            await asyncio.to_thread(cgroup.remove)
        await self._sup.remove_network(dep)
        self._records.remove(dep.release.deployment_id)
        dep.state = "stopped"

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
        """One pass: stop idle instances, measure what dormant deployments keep, drop the
        least recently used templates to the deep tier while memory asks for it. One pass at a
        time (an explicit call waits for the loop's)."""
        async with self._sweeping:
            await self._sweep()

    async def _sweep(self) -> None:
        now = self.clock()
        stops = []
        for dep in list(self._deployments.values()):
            instance = dep.instance
            if instance is None or instance.stopping or dep.stopping is not None:
                continue
            if is_idle(dep.last_request_at, dep.in_flight, now, dep.idle_timeout):
                stops.append(self._instances.stop(dep, "idle"))
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        try:
            self._ledger.record(now, save=False)
            await self._ledger.sample(now)
            self._ledger.record(now)
        except Exception:
            log.exception("could not measure or save what dormant deployments keep")
        await self._evict(now)
        await self._paged.sweep(now)
        self._rehearsals.sweep(now)

    def _dormant(self) -> list[DeploymentRuntime]:
        return [d for d in self._deployments.values() if is_dormant(d)]

    async def _evict(self, now: float) -> None:
        """Keep the resident dormant templates within the template budget: past it the least
        recently used go to the paged tier while swap holds them, else to the deep tier; and
        drop more while the host is short of memory (`idle.templates_to_evict`)."""
        dormant = self._dormant()
        if not dormant:
            return
        available = procs.mem_available_kb()
        paging_on = self.settings.page_out_after > 0
        candidates = []
        for d in dormant:
            shared = self._sharing.get(d.shared_key) if d.shared_key is not None else None
            did = d.release.deployment_id
            candidates.append(
                DormantTemplate(
                    did,
                    self._ledger.last_used(d, now),
                    self._ledger.estimate_kb(d),
                    paged=d.paged,
                    pageable=paging_on and d.shared_key is None,
                    waits=paging_on and shared is not None and shared.users == {did},
                )
            )
        room = 0
        if paging_on:
            room = await swap_room_kb()
        plan = templates_to_evict(
            candidates, now, self.template_budget_kb, available, self.low_memory_kb, room
        )
        for deployment_id in plan.page_out:
            found = self._deployments.get(deployment_id)
            if found is not None and is_dormant(found) and not found.paged:
                self._sup.system(found, "least recently used, over the template budget")
                await self._paged.page_out(found)
        for deployment_id in plan.drop:
            found = self._deployments.get(deployment_id)
            if found is not None and is_dormant(found):  # still, after the awaits
                dep = found
                short = available is not None and available < self.low_memory_kb
                why = "the host is short of memory" if short else "over the template budget"
                self._sup.system(
                    dep,
                    f"template dropped, least recently used ({why}): deep tier, nothing resident",
                )
                await self._templates.drop(dep)
                self._ledger.forget_sample(deployment_id)

    async def reclaim_paged(self) -> None:
        """Reclaim now what templates paged out keep in the swap cache (bench, tests)."""
        await self._paged.reclaim_now()

    async def page_out_template(self, deployment_id: str) -> int:
        """Page out a dormant template's memory now (what ``page_out_after`` does); the bytes
        the kernel went over (0: not dormant). Without free swap only file pages can go."""
        return await self._paged.page_out(self._get(deployment_id))

    @property
    def hot_set_budget_kb(self) -> int:
        """What the hot sets of paged templates may keep together (kB; tests, bench)."""
        return self._paged.budget_kb

    @hot_set_budget_kb.setter
    def hot_set_budget_kb(self, value: int) -> None:
        self._paged.budget_kb = value

    async def drop_template(self, deployment_id: str) -> None:
        """Force the deep tier now (what the template budget or memory pressure would do)."""
        dep = self._get(deployment_id)
        if dep.instance is None:
            await self._templates.drop(dep)
            self._ledger.forget_sample(deployment_id)

    # -- warming templates after a restart --------------------------------------------------

    def warm_templates(self, current: Iterable[str] = ()) -> None:
        """Load again, in the background and one at a time, the templates of the deployments
        used most recently before this start (then the ``current`` ones never used), within
        ``Settings.warm_budget_mb``. A request that arrives first simply wakes as usual."""
        if self.template_budget_kb <= 0 or not self.use_templates:
            return
        if self._warmer is not None and not self._warmer.done():
            return
        self._warmer = asyncio.create_task(self._warm(set(current)))

    async def warmed(self) -> None:
        """Wait until the warming started by `warm_templates` is over (if any)."""
        if self._warmer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._warmer)

    def warm_candidates(self, current: set[str]) -> list[WarmCandidate]:
        """Registered deployments with a template tier that were used before, or are current."""
        return self._ledger.warm_candidates(current, self.share_templates)

    async def _warm(self, current: set[str]) -> None:
        # Past the template budget, what swap holds is warmed too: the sweep pages the least
        # recently used out (`_evict`), so those wake from the paged tier, not the deep one.
        budget_kb = self.template_budget_kb
        if self.settings.page_out_after > 0:
            room = await swap_room_kb()
            budget_kb += max(0, room)
        order = templates_to_warm(self.warm_candidates(current), budget_kb, time.time())
        warmed = 0
        for did in order:
            dep = self._deployments.get(did)
            if dep is None or dep.instance is not None or dep.waking is not None:
                continue
            available = procs.mem_available_kb()
            if available is not None and available < self.low_memory_kb:
                log.warning("warming templates stopped: the host is short of memory")
                break
            try:
                async with dep.template_lock:
                    if dep.instance is not None or (
                        dep.template is not None and dep.template.alive
                    ):
                        continue
                    await self._templates.load(dep)
            except (PhemeralError, OSError) as exc:
                self._sup.system(dep, f"could not load the template ahead of a request: {exc}")
                continue
            warmed += 1
            self._sup.system(dep, "template loaded ahead of its first request (warm start)")
        log.info("warmed %d of %d template(s) after start", warmed, len(order))

    # -- the parts' callbacks --------------------------------------------------------------------

    async def _stop_instance(self, dep: DeploymentRuntime, reason: str) -> None:
        await self._instances.stop(dep, reason)

    def _child_exited(
        self, dep: DeploymentRuntime, pid: int, code: int | None, sig: int | None
    ) -> None:
        self._instances.child_exited(dep, pid, code, sig)

    def _template_ended(self, dep: DeploymentRuntime, template: TemplateProcess) -> None:
        self._instances.template_ended(dep, template)


def template_budget_kb(settings: Settings) -> int:
    """What dormant templates may keep together (kB): ``warm_budget_mb``, else half of the
    host's memory."""
    if settings.warm_budget_mb is not None:
        return settings.warm_budget_mb * 1024
    total = procs.mem_total_kb()
    return total // 2 if total is not None else 1024 * 1024
