"""Instance sets: starting one (forked by the template or a custom command), watching its
processes, replacing cleanly exiting workers, crashes and their delayed restart, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from phemeral import sandbox
from phemeral.errors import BootFailed, PhemeralError, RuntimeFailure
from phemeral.models import Upstream
from phemeral.runtime import paging, procs
from phemeral.runtime.app_template import AppTemplates
from phemeral.runtime.backoff import record_crash, retry_after
from phemeral.runtime.deployment import DeploymentRuntime, Instance, Supervision
from phemeral.runtime.launch import free_port, instance_id, oom_kills
from phemeral.runtime.template import TemplateGone, TemplateProcess

PROBE_INTERVAL = 0.005
RESPAWN_LIMIT = 10  # clean worker exits replaced per RESPAWN_WINDOW s before it is a crash
RESPAWN_WINDOW = 10.0
LISTEN_BACKLOG = 2048


class Instances:
    """Starts, watches and stops the instance sets of deployments."""

    def __init__(
        self,
        sup: Supervision,
        templates: AppTemplates,
        ensure_running: Callable[[str], Awaitable[Upstream]],
    ) -> None:
        self.sup = sup
        self.templates = templates
        self._ensure_running = ensure_running

    # -- waking --------------------------------------------------------------------------------

    async def wake(self, dep: DeploymentRuntime) -> Upstream:
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
            self.sup.system(dep, f"start failed: {failure}")
            if failure is exc:
                raise
            raise failure from exc
        except BaseException:
            dep.state = "stopped"
            raise
        dep.instance = instance
        dep.state = "running"
        if not dep.rehearsing:  # a rehearsal is not a use, nor a wake to report
            dep.last_request_at = self.sup.clock()
            dep.last_wake_ms = (time.perf_counter() - started) * 1000
            dep.last_wake_at = datetime.now(UTC)
        return instance.upstream

    async def _wake_template(self, dep: DeploymentRuntime) -> Instance:
        trace = dep.wake_trace
        async with dep.template_lock:
            template = dep.template
            if template is None or not template.alive:
                template = await self.templates.load(dep)
        if trace is not None:
            trace.mark("template")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(LISTEN_BACKLOG)
            port = listener.getsockname()[1]
            iid = instance_id()
            did = dep.release.deployment_id
            try:
                # Its own throwaway layer over the template's view, at the app's path.
                self.sup.views.start_instance(did, iid, dep.release.uid)
                if trace is not None:
                    trace.mark("view")
                pids = await template.serve(listener.fileno(), out_w, err_w, template.workers, iid)
                if trace is not None:
                    trace.mark("fork")
                    if template.last_serve_ms is not None:
                        trace.note("forked", template.last_serve_ms)
            except TemplateGone as exc:
                os.close(out_r)
                os.close(err_r)
                await self.sup.forget_dirs(self.sup.views.end_instance(did, iid))
                raise BootFailed("the app's template process ended before it could serve") from exc
            except BaseException:
                os.close(out_r)
                os.close(err_r)
                await self.sup.forget_dirs(self.sup.views.end_instance(did, iid))
                raise
        finally:
            listener.close()
            os.close(out_w)
            os.close(err_w)
        instance = Instance(
            iid,
            Upstream("127.0.0.1", port),
            self.sup.clock(),
            pids=pids,
            exited=asyncio.get_running_loop().create_future(),
            template=template,
        )
        instance.logs = self.sup.attach_output(dep, iid, out_r, err_r)
        dep.dormant_since = None
        return instance

    async def _spawn_command(self, dep: DeploymentRuntime) -> Instance:
        sup = self.sup
        await sup.ensure_cgroup(dep)
        await sup.ensure_network(dep)
        port = free_port()
        env = sup.launcher.env(dep.release, port)
        iid = instance_id()
        release = dep.release
        view = sup.views.command(release.deployment_id, iid, release.workdir, release.uid)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            spec = sup.launcher.spec(dep.release, env, view, netns=dep.netns)
            argv = sup.launcher.argv(["/bin/sh", "-c", dep.release.start_command], spec, dep.cgroup)
            process = await sup.launcher.exec(argv, out_w, err_w)
            if dep.wake_trace is not None:
                dep.wake_trace.mark("spawn")
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            await sup.forget_dirs(sup.views.end_instance(release.deployment_id, iid))
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        sup.records.write(dep.release.deployment_id, process.pid, dep.cgroup)
        loop = asyncio.get_running_loop()
        # In its own namespace the app listens on that namespace's address (0.0.0.0 or
        # 127.0.0.1 inside both work, see `phemeral.network`); else on the host's loopback.
        host = dep.netns.address if dep.netns is not None else "127.0.0.1"
        instance = Instance(
            iid,
            Upstream(host, port),
            sup.clock(),
            process=process,
            exited=loop.create_future(),
        )
        instance.logs = sup.attach_output(dep, iid, out_r, err_r)
        sup.background(self._watch_command(dep, instance, process))
        deadline = time.monotonic() + sup.settings.boot_timeout
        while True:
            if instance.exited is not None and instance.exited.done():
                raise BootFailed(f"the app exited before binding $PORT: {instance.exited.result()}")
            try:
                _reader, writer = await asyncio.open_connection(host, port)
                writer.close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                await self.kill(dep, instance)
                raise BootFailed(
                    f"the app did not accept connections on $PORT within "
                    f"{sup.settings.boot_timeout:g} s"
                )
            await asyncio.sleep(PROBE_INTERVAL)
        return instance

    async def _watch_command(
        self, dep: DeploymentRuntime, instance: Instance, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        # The launcher ended: anything left of its tree goes too.
        procs.kill_tree(process.pid)
        self.gone(dep, instance, self._exit_reason(dep, code, None))

    # -- exits and crashes ---------------------------------------------------------------------

    def _exit_reason(self, dep: DeploymentRuntime, code: int | None, sig: int | None) -> str:
        if dep.cgroup is not None:
            kills = oom_kills(dep.cgroup)
            if kills > dep.oom_kills:
                dep.oom_kills = kills
                return f"killed: memory limit exceeded ({self.sup.settings.app_memory_mb} MB)"
        if sig is not None:
            with contextlib.suppress(ValueError):
                return f"killed by signal {signal.Signals(sig).name}"
            return f"killed by signal {sig}"
        if code is not None and code > 128 and code - 128 in (9, 15):
            return f"exited with code {code} (killed by signal {code - 128})"
        return f"exited with code {code}"

    def child_exited(
        self, dep: DeploymentRuntime, pid: int, code: int | None, sig: int | None
    ) -> None:
        """A process a template forked ended (its template reports it)."""
        candidates = [dep.instance, *dep.draining]
        instance = next((i for i in candidates if i is not None and pid in i.pids), None)
        if instance is None:
            return
        instance.pids.remove(pid)
        reason = self._exit_reason(dep, code, sig)
        if code == 0 and not instance.stopping and self._may_respawn(instance):
            # A worker that ends cleanly while serving (max requests reached) is replaced, as
            # gunicorn's arbiter and uvicorn's supervisor replace theirs.
            self.sup.system(dep, f"instance {instance.id}: a worker exited cleanly; replacing it")
            self.sup.background(self._respawn(dep, instance))
            return
        if instance.stopping:
            if not instance.pids and instance.exited is not None and not instance.exited.done():
                instance.exited.set_result(reason)
            return
        self.gone(dep, instance, reason)

    def template_ended(self, dep: DeploymentRuntime, template: TemplateProcess) -> None:
        instance = dep.instance
        if instance is not None and instance.template is template and not instance.stopping:
            self.gone(dep, instance, "the app's template process ended")

    def _may_respawn(self, instance: Instance) -> bool:
        now = self.sup.clock()
        instance.respawns = [t for t in instance.respawns if now - t < RESPAWN_WINDOW]
        if len(instance.respawns) >= RESPAWN_LIMIT:
            return False  # workers that keep ending are a crash loop, not max requests
        instance.respawns.append(now)
        return instance.template is not None and instance.template.alive

    async def _respawn(self, dep: DeploymentRuntime, instance: Instance) -> None:
        assert instance.template is not None
        try:
            pids = await instance.template.respawn(instance.id)
        except (BootFailed, TemplateGone, TimeoutError):
            if not instance.stopping:
                self.gone(dep, instance, "a worker exited and could not be replaced")
            return
        if instance.stopping:
            await instance.template.signal(pids, signal.SIGTERM)
        instance.pids.extend(pids)

    def gone(self, dep: DeploymentRuntime, instance: Instance, reason: str) -> None:
        """The instance set ended: expected while stopping, else a crash (restart scheduled)."""
        if instance.exited is not None and not instance.exited.done():
            instance.exited.set_result(reason)
        if instance.stopping or dep.instance is not instance:
            return
        # An unexpected exit: a crash. Stop what is left of the set, schedule the restart.
        instance.stopping = True
        dep.instance = None
        dep.last_exit = reason
        now = self.sup.clock()
        dep.history = record_crash(dep.history, now, instance.started_at)
        wait = retry_after(dep.history, now)
        dep.state = "backoff" if wait > 0 else "crashed"
        self.sup.system(
            dep,
            f"instance {instance.id} crashed ({reason}); restart #{dep.history.crashes} "
            + ("now" if wait == 0 else f"in {wait:.0f} s"),
        )
        loop = asyncio.get_running_loop()
        self.sup.background(self.kill(dep, instance))
        recently_used = now - dep.last_request_at < dep.idle_timeout or dep.in_flight > 0
        if recently_used and dep.waking is None:
            dep.restart_task = loop.create_task(self._restart_after(dep, wait))
        if not recently_used:
            dep.state = "stopped" if wait == 0 else "backoff"

    async def _restart_after(self, dep: DeploymentRuntime, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(RuntimeFailure):
            await self._ensure_running(dep.release.deployment_id)

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self, dep: DeploymentRuntime, reason: str) -> None:
        """Stop the deployment's instance gracefully (one stop at a time per deployment)."""
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

    async def _graceful_stop(self, dep: DeploymentRuntime, instance: Instance, reason: str) -> None:
        sup = self.sup
        instance.stopping = True
        dep.draining.append(instance)
        dep.state = "stopping"
        sup.system(dep, f"stopping instance {instance.id} ({reason})")
        own = instance.template is dep.template and dep.template is not None
        learned = False
        if own and dep.cgroup is not None and sup.settings.hot_set_mb > 0:
            if dep.paged:
                await self._learn_hot_set(dep, dep.cgroup, instance, "paged")
            elif dep.hot_learning is dep.template:
                # Its anonymous pages were written out while it was dormant: those present
                # again are what this wake touched, read or written.
                dep.hot_learning, dep.learned_from = None, dep.template
                await self._learn_hot_set(dep, dep.cgroup, instance, "learning")
                learned = True
            elif dep.hot_template is not dep.template and dep.shared_key is None:
                # From the template tier: what its fork wrote (the template's pages it copied,
                # most of what it touched: Python writes reference counts) and the file pages
                # it faulted in, so a first wake after the page-out needs no read-back either.
                # The paged tier's sweep then writes its memory out once so that the next wake
                # shows its reads too (`PagedTier.start_learning`), unless that came first.
                await self._learn_hot_set(dep, dep.cgroup, instance, "written")
        await self._signal(instance, signal.SIGTERM)
        if instance.exited is not None:
            try:
                await asyncio.wait_for(asyncio.shield(instance.exited), sup.stop_timeout)
            except TimeoutError:
                sup.system(dep, f"instance {instance.id} ignored SIGTERM; killing it")
        await self.kill(dep, instance)
        if learned and dep.cgroup is not None:
            await self._map_back(dep.cgroup)
        dep.draining.remove(instance)
        if dep.instance is instance:
            dep.instance = None
        if dep.instance is not None:
            return  # a newer instance took over while this one drained
        dep.state = "stopped"
        if dep.template is not None and dep.template.alive:
            dep.dormant_since = sup.clock()
            if dep.needs_refresh:
                sup.background(self.templates.refresh(dep))
        else:
            sup.records.remove(dep.release.deployment_id)

    async def _learn_hot_set(
        self,
        dep: DeploymentRuntime,
        cgroup: sandbox.Cgroup,
        instance: Instance,
        how: Literal["paged", "learning", "written"],
    ) -> None:
        """Before an instance forked from a template of the deployment's stops: its hot set.
        ``paged``: the pages it and the paged template touched since the page-out (read back
        from swap or from their files, or copied). ``learning``: the same of a resident
        template whose anonymous pages were written out after its last wake (its file pages
        stayed mapped: only its forks' count). ``written``: of a resident template, the pages
        the instance wrote to and the file pages it faulted in. Kept unless its anonymous
        pages pass ``Settings.hot_set_mb`` (a busy instance touches most of the heap: then
        the template is paged out whole); a ``learning`` one that does keeps the last."""
        template = dep.template

        def learn() -> tuple[list[tuple[int, int]], int, int | None]:
            parent = None
            for pid in cgroup.pids():
                if procs.ns_pid(pid) in instance.pids:
                    fields = procs.stat_fields(pid)
                    parent = int(fields[1]) if fields and len(fields) > 1 else parent
            if parent is None:
                return [], 0, None
            # The template's own pages count too: it runs to fork the next instance.
            found: list[tuple[int, int]] = []
            if how == "written":  # a resident template: all its pages are present
                for pid in procs.descendants(parent):
                    found += paging.written_ranges(pid) + paging.touched_file_pages(pid)
            else:
                found += paging.present_ranges(parent)
                if how == "learning":
                    found = paging.within(paging.merge(found), paging.anonymous(parent))
                for pid in procs.descendants(parent):
                    found += paging.present_ranges(pid)
            hot = paging.within(paging.merge(found), paging.mappings(parent))
            own = paging.within(hot, paging.anonymous(parent))
            return hot, sum(length for _, length in own), parent

        hot, size, parent = await asyncio.to_thread(learn)
        if parent is None or not hot or size > self.sup.settings.hot_set_mb * 1024 * 1024:
            if how != "learning":
                dep.hot_set, dep.hot_template, dep.hot_pid, dep.hot_kb = [], None, None, 0
                dep.hot_how = ""
            return
        dep.hot_set, dep.hot_template, dep.hot_pid = hot, template, parent
        dep.hot_kb, dep.hot_how = size // 1024, how

    @staticmethod
    async def _map_back(cgroup: sandbox.Cgroup) -> None:
        """After a learning wake: map the rest of its template's pages back from the swap
        cache (every process the cgroup still holds), so that it stays wholly resident, as its
        tier says (and its PSS counts)."""

        def back() -> None:
            for pid in cgroup.pids():
                paging.bring_in(pid, paging.swapped_within(pid, paging.anonymous(pid)))

        await asyncio.to_thread(back)

    async def _signal(self, instance: Instance, sig: int) -> None:
        if instance.pids and instance.template is not None:
            await instance.template.signal(instance.pids, sig)
        elif instance.process is not None and instance.process.returncode is None:
            # The app's processes, deepest first; the sandbox's own init ignores TERM.
            tree = procs.descendants(instance.process.pid)
            procs.signal_all(reversed(tree), sig)
            if sig == signal.SIGKILL:
                procs.signal_all([instance.process.pid], sig)

    async def kill(self, dep: DeploymentRuntime, instance: Instance) -> None:
        """Kill the whole tree of an instance that is done (or did not stop in time)."""
        instance.stopping = True
        await self._signal(instance, signal.SIGKILL)
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
        await self.sup.capture.drain(instance.logs, 1.0)
        if dep.instance is instance:
            dep.instance = None
        old = instance.template
        if old is not None and old is not dep.template:
            await old.close(timeout=2)  # replaced by a refreshed template while it served
        elif old is not None:
            await old.release(instance.id)
        # Its throwaway writes go with it.
        await self.sup.forget_dirs(
            self.sup.views.end_instance(dep.release.deployment_id, instance.id)
        )
