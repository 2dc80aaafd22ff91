"""A deployment's own template: the dormant tier.

Loaded on the first wake (after the start command's pre-commands), either launched alone or
forked from its project's shared framework template; re-forked once that shared template has
learned the first app's imports; dropped to the deep tier by the sweep or on retire.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from phemeral.errors import BootFailed
from phemeral.runtime import procs
from phemeral.runtime.deployment import DeploymentRuntime, Supervision
from phemeral.runtime.sharing import SharedTemplate, SharedTemplates
from phemeral.runtime.template import MAX_IMPORTED, TemplateGone, TemplateProcess

log = logging.getLogger(__name__)

# Seconds a deployment stays dormant before it gets a template of its own (`_collapse`): a
# wake soon after a scale to zero costs no import; 4x after a switch a wake made useless.
COLLAPSE_AFTER = 5.0
COLLAPSE_AFTER_MAX = 600.0

ChildExit = Callable[[DeploymentRuntime, int, int | None, int | None], None]


class AppTemplates:
    """Loads, refreshes, watches and drops the per-deployment templates."""

    def __init__(
        self,
        sup: Supervision,
        shared: SharedTemplates,
        *,
        share: bool,
        on_child_exit: ChildExit,
        on_ended: Callable[[DeploymentRuntime, TemplateProcess], None],
    ) -> None:
        self.sup = sup
        self.shared = shared
        self.share = share
        self._on_child_exit = on_child_exit
        self._on_ended = on_ended
        self._collapsing = asyncio.Lock()
        self._collapse_after: dict[str, float] = {}  # deployment id → its current delay

    async def load(self, dep: DeploymentRuntime) -> TemplateProcess:
        assert dep.server is not None
        sup, release = self.sup, dep.release
        await sup.ensure_cgroup(dep)
        env = {**sup.launcher.env(release, 8000), **dep.server.env}
        timeout = sup.settings.boot_timeout
        did = release.deployment_id
        # The template's writable layer: pre-commands and the app's import write into it.
        base = sup.views.base(did, release.workdir, release.uid)
        for command in dep.server.pre_commands:
            await self._run_pre_command(dep, command, env, timeout, base)

        if self.share and release.lock_hash:
            return await self._fork_from_shared(dep, env, timeout)
        while True:
            template = await self._launch_own(dep, env, timeout)
            if not self._import_per_server(dep, template):
                break
            await template.close(timeout=2)
            await sup.capture.drain(dep.template_logs, 1.0)
        self._adopt(dep, template)
        return template

    def _import_per_server(self, dep: DeploymentRuntime, template: TemplateProcess) -> bool:
        """Whether ``template`` imported an app that forks must not share (then the next
        template of the deployment lets each server import it, as gunicorn without
        --preload and uvicorn do)."""
        if not template.must_import_per_server:
            return False
        opened = [
            *template.resources[:3],
            *([f"{template.threads} thread(s)"] * bool(template.threads)),
        ]
        self.sup.system(
            dep,
            "the app's import opens what forked servers must not share ("
            + ", ".join(opened)
            + "): each server imports it after the fork, as its server does without --preload",
        )
        dep.import_per_server = True
        dep.app_modules = template.modules
        return True

    async def _launch_own(
        self,
        dep: DeploymentRuntime,
        env: dict[str, str],
        timeout: float,
        app_view: Path | None = None,
    ) -> TemplateProcess:
        """A template launched alone in the deployment's sandbox, the app loaded (its app
        directory: ``app_view``, else the deployment's attached view)."""
        assert dep.server is not None
        sup, release, did = self.sup, dep.release, dep.release.deployment_id
        template = self._new(dep)
        await sup.ensure_network(dep)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # Bound from a shared mount point: instance layers stacked on it later appear inside.
        view = app_view if app_view is not None else sup.views.attach(did)
        spec = sup.launcher.spec(release, env, view, netns=dep.netns)
        try:
            process = await template.launch(
                lambda fd: sup.launcher.template_argv(release, fd, spec, dep.cgroup),
                out_w,
                err_w,
            )
        finally:
            os.close(out_w)
            os.close(err_w)
        dep.template_logs = sup.attach_output(dep, "template", out_r, err_r)
        sup.records.write(release.deployment_id, process.pid, dep.cgroup)
        try:
            await template.load(
                app_spec(dep),
                list(dep.server.argv),
                server_workdir(dep),
                env,
                timeout,
                lazy=dep.import_per_server,
                preload=dep.app_modules,
            )
        except BootFailed:
            await template.close(timeout=2)
            await sup.capture.drain(dep.template_logs, 1.0)
            raise
        await self._import_learned(dep, template)
        return template

    def _adopt(self, dep: DeploymentRuntime, template: TemplateProcess) -> None:
        if template.held and self.sup.views.share_base(dep.release.deployment_id):
            self.sup.system(
                dep,
                f"the app keeps {len(template.held)} file(s) of its directory open from import "
                f"({template.held[0]}): its instances write into the template's layer, not "
                "one of their own",
            )
        dep.template = template
        dep.dormant_since = self.sup.clock()
        self.sup.background(self._watch(dep, template))

    def _new(self, dep: DeploymentRuntime) -> TemplateProcess:
        def on_exit(pid: int, code: int | None, sig: int | None) -> None:
            self._on_child_exit(dep, pid, code, sig)

        def on_imported(names: list[str]) -> None:
            known = set(dep.learned_imports)
            added = [n for n in names if n not in known]
            dep.learned_imports = (dep.learned_imports + added)[:MAX_IMPORTED]

        template = TemplateProcess(on_exit)
        template.on_imported = on_imported
        return template

    @staticmethod
    async def _import_learned(dep: DeploymentRuntime, template: TemplateProcess) -> None:
        """Import, once the app is loaded, what the servers of an earlier template of it
        imported after their fork (so the first fork of this one does not)."""
        if dep.learned_imports and not dep.import_per_server:
            await template.preload(dep.learned_imports)

    async def _run_pre_command(
        self,
        dep: DeploymentRuntime,
        command: str,
        env: dict[str, str],
        timeout: float,
        app_view: Path | None,
    ) -> None:
        sup = self.sup
        sup.system(dep, f"running: {command}")
        await sup.ensure_network(dep)
        out_r, out_w = os.pipe()
        try:
            spec = sup.launcher.spec(dep.release, env, app_view, netns=dep.netns)
            process = await sup.launcher.exec(
                sup.launcher.argv(["/bin/sh", "-c", command], spec, dep.cgroup), out_w, out_w
            )
        finally:
            os.close(out_w)
        done = sup.capture.attach(
            out_r, dep.release.deployment_id, "release", "stdout", sup.tee(dep)
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError as exc:
            procs.kill_tree(process.pid)
            await process.wait()
            raise BootFailed(f"`{command}` did not finish within {timeout:g} s") from exc
        await sup.capture.drain([done], 1.0)
        if code != 0:
            raise BootFailed(f"`{command}` failed with exit code {code}")

    async def _fork_from_shared(
        self, dep: DeploymentRuntime, env: dict[str, str], timeout: float
    ) -> TemplateProcess:
        """A per-deployment template forked from its project's shared framework template.

        Only the app's own import and warm-up are private to it (a few MB); the framework pages
        stay shared. It moves into the deployment's cgroup before loading anything.
        """
        shared = await self.shared.acquire(dep)
        try:
            while True:
                template = self._new(dep)
                dep.template_logs = await self._fork(dep, shared, template, env, timeout)
                if not self._import_per_server(dep, template):
                    break
                await template.close(timeout=2)
                await self.sup.capture.drain(dep.template_logs, 1.0)
        except BootFailed:
            await self.shared.release(dep)
            raise
        if not shared.learned:
            shared.learned = True  # what this app imported, the next fork will not re-import
            self.sup.background(self._learn(dep, shared, template.modules))
        for other_id in shared.users - {dep.release.deployment_id}:
            other = self.sup.deployments.get(other_id)
            if other is not None and other.needs_refresh and other.template is not None:
                # waiting to be alone and dormant (`_collapse`): no longer alone, re-fork now
                self.sup.background(self.refresh(other))
        self._adopt(dep, template)
        return template

    async def _fork(
        self,
        dep: DeploymentRuntime,
        shared: SharedTemplate,
        template: TemplateProcess,
        env: dict[str, str],
        timeout: float,
    ) -> list[asyncio.Future[None]]:
        """Fork ``template`` from ``shared`` and load the app in it; its log pipes."""
        release, server = dep.release, dep.server
        assert server is not None
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
        logs = self.sup.attach_output(dep, "template", out_r, err_r)
        if shared.releases_view is not None:
            # The deployment's layer at its app directory inside the shared template's view.
            inside = shared.releases_view / release.workdir.relative_to(release.path.parent)
            self.sup.views.attach(did, inside)
        launcher = shared.template.host_pid
        template.host_pid = procs.host_pid(launcher, pid) if launcher is not None else None
        if dep.cgroup is not None and template.host_pid is not None:
            try:
                await asyncio.to_thread(dep.cgroup.attach, template.host_pid)
            except OSError as exc:
                log.warning("could not move %s's template into its cgroup: %s", did, exc)
        try:
            await template.load(
                app_spec(dep),
                list(server.argv),
                server_workdir(dep),
                env,
                timeout,
                venv_from=str(shared.venv),
                venv_to=str(release.venv),
                lazy=dep.import_per_server,
                preload=dep.app_modules,
            )
        except BootFailed:
            await template.close(timeout=2)
            await self.sup.capture.drain(logs, 1.0)
            raise
        await self._import_learned(dep, template)
        return logs

    async def _learn(
        self, dep: DeploymentRuntime, shared: SharedTemplate, modules: list[str]
    ) -> None:
        """Preload what the first app imported into the shared template, then re-fork that
        first deployment's own template (while dormant) so it shares those pages too."""
        await shared.template.preload(modules)
        dep.needs_refresh = True
        await self.refresh(dep)

    async def refresh(self, dep: DeploymentRuntime) -> None:
        """Re-fork a dormant deployment's template from its shared one (see `_learn`), or,
        when it is the shared template's only user, give it one of its own (`_collapse`).

        The new template loads beside the old one, which keeps serving wakes meanwhile; the
        swap happens only if the deployment is still dormant then.
        """
        shared = self.shared.get(dep.shared_key)
        old = dep.template
        if shared is None or not dep.needs_refresh or old is None:
            return
        if shared.users == {dep.release.deployment_id}:
            if await self._collapse(dep, shared) or shared.users == {dep.release.deployment_id}:
                return  # replaced, or not dormant now (again when it next scales to zero)
            old = dep.template  # another deployment joined meanwhile: re-fork as below
            if (
                old is None
                or not dep.needs_refresh
                or self.shared.get(dep.shared_key) is not shared
            ):
                return
        dep.needs_refresh = False
        fresh = self._new(dep)
        sup = self.sup
        try:
            env = {**sup.launcher.env(dep.release, 8000), **(dep.server.env if dep.server else {})}
            logs = await self._fork(dep, shared, fresh, env, sup.settings.boot_timeout)
        except BootFailed as exc:
            if shared.template.alive and dep.template is old:  # else it was dropped meanwhile
                log.warning("could not refresh %s's template: %s", dep.release.deployment_id, exc)
            return
        async with dep.template_lock:
            if dep.template is not old:  # dropped or replaced meanwhile
                await fresh.close(timeout=2)
                await sup.capture.drain(logs, 1.0)
                return
            old_logs, dep.template_logs = dep.template_logs, logs
            dep.template = fresh
            sup.background(self._watch(dep, fresh))
        instance = dep.instance
        if instance is None or instance.template is not old:
            await old.close(timeout=2)  # else it closes when the instance it forked is done
        await sup.capture.drain(old_logs, 0.0 if instance is not None else 1.0)

    async def _watch(self, dep: DeploymentRuntime, template: TemplateProcess) -> None:
        assert template.closed is not None
        await template.closed
        if dep.template is template:
            dep.template = None
        self._on_ended(dep, template)

    async def _abandon(self, dep: DeploymentRuntime, view: Path | None) -> None:
        """Undo what a template launched beside (`_collapse`) set up and no longer needs."""
        if view is not None:
            self.sup.views.detach(view)
        if dep.template is None and dep.instance is None:  # dropped meanwhile: nothing stays
            await self.sup.remove_network(dep)
            self.sup.records.remove(dep.release.deployment_id)
        elif dep.shared_key is not None:  # the shared template's record covers the old one
            self.sup.records.remove(dep.release.deployment_id)

    async def drop(self, dep: DeploymentRuntime) -> None:
        """The deep tier: close the template, remove the cgroup when nothing else runs."""
        async with dep.template_lock:
            template = dep.template
            dep.template = None
            dep.dormant_since = None
            if template is not None:
                await template.close(timeout=self.sup.stop_timeout)
                await self.sup.capture.drain(dep.template_logs, 1.0)
            if dep.cgroup is not None and dep.instance is None:
                cgroup, dep.cgroup = dep.cgroup, None  # deep tier: not even a cgroup is left
                await asyncio.to_thread(cgroup.remove)
            if dep.instance is None:  # the template's writable layer goes with it
                gone = self.sup.views.drop(dep.release.deployment_id)
                if gone is not None:
                    await self.sup.forget_dirs([gone])
                await self.sup.remove_network(dep)
            await self._release_shared(dep)
            if dep.instance is None:
                self.sup.records.remove(dep.release.deployment_id)

    async def _release_shared(self, dep: DeploymentRuntime) -> None:
        """``dep`` no longer uses its shared template; a deployment left alone on it gets a
        template of its own when dormant (`_collapse`)."""
        key = dep.shared_key
        await self.shared.release(dep)
        shared = self.shared.get(key)
        if shared is None or len(shared.users) != 1:
            return
        other = self.sup.deployments.get(next(iter(shared.users)))
        if other is not None and other.template is not None:
            other.needs_refresh = True  # done now if dormant, else when it next scales to zero
            if self._dormant(other):
                self.sup.background(self.refresh(other))

    @staticmethod
    def _dormant(dep: DeploymentRuntime) -> bool:
        return dep.instance is None and dep.waking is None and not dep.draining

    async def _collapse(self, dep: DeploymentRuntime, shared: SharedTemplate) -> bool:
        """One template for a deployment alone on its shared one: a template of its own is
        launched beside (the app imported in one process), swapped in while the deployment is
        dormant, then the shared template and the one forked from it close.

        Two processes (the framework template and the fork, each keeping pages the other
        copied) cost more than one that imported everything; a shared template only pays
        while several deployments fork from it. Not while an instance runs (its servers live
        in the shared template's sandbox): then at the next scale to zero (``needs_refresh``
        stays set). Whether it replaced the template.
        """
        if not self._dormant(dep):
            return False
        did = dep.release.deployment_id
        since = dep.dormant_since
        await asyncio.sleep(self._collapse_after.get(did, COLLAPSE_AFTER))
        if not self._dormant(dep) or dep.dormant_since != since:
            return False  # woken meanwhile: again at its next scale to zero
        async with self._collapsing:  # one full import at a time
            old = dep.template
            if old is None or not self._dormant(dep) or shared.users != {dep.release.deployment_id}:
                return False
            dep.needs_refresh = False
            sup = self.sup
            view = sup.views.attach_beside(did)
            env = {**sup.launcher.env(dep.release, 8000), **(dep.server.env if dep.server else {})}
            old_logs = dep.template_logs
            try:
                fresh = await self._launch_own(dep, env, sup.settings.boot_timeout, view)
            except (BootFailed, OSError) as exc:
                dep.template_logs = old_logs
                await self._abandon(dep, view)
                if dep.template is old:  # else dropped meanwhile (its view went with it)
                    log.warning("could not give %s a template of its own: %s", did, exc)
                return False
            logs, dep.template_logs = dep.template_logs, old_logs
            async with dep.template_lock:
                keep = (
                    dep.template is old
                    and self._dormant(dep)
                    and shared.users == {did}
                    and not fresh.must_import_per_server
                )
                if keep:
                    if view is not None:
                        sup.views.use_mountpoint(did, view)
                    dep.template, dep.template_logs = fresh, logs
                    sup.background(self._watch(dep, fresh))
                    sup.system(
                        dep, "template: the app imported in a template of its own (one process)"
                    )
            if not keep:  # woken, dropped or joined meanwhile: try again when dormant
                dep.needs_refresh = dep.template is old and old is not None
                delay = self._collapse_after.get(did, COLLAPSE_AFTER) * 4
                self._collapse_after[did] = min(delay, COLLAPSE_AFTER_MAX)
                await fresh.close(timeout=2)
                await sup.capture.drain(logs, 1.0)
                await self._abandon(dep, view)
                return False
            self._collapse_after.pop(did, None)
            await old.close(timeout=2)
            await sup.capture.drain(old_logs, 1.0)
            await self.shared.release(dep)
            return True


def app_spec(dep: DeploymentRuntime) -> dict[str, object]:
    """What the template is told of the app: the detected AppSpec, and the server in any case
    (a declared or custom command names its own app on its command line)."""
    assert dep.server is not None
    spec: dict[str, object] = asdict(dep.release.app) if dep.release.app is not None else {}
    spec["server"] = dep.server.server
    return spec


def server_workdir(dep: DeploymentRuntime) -> str:
    """The app's root, or the directory a ``cd DIR && server …`` command moves to."""
    chdir = dep.server.chdir if dep.server is not None else None
    return str(dep.release.workdir / chdir) if chdir else str(dep.release.workdir)
