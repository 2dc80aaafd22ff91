"""Shared framework templates: one per project, dependency set and python.

A shared template imports the framework and server (then what the first app imported) once;
the per-deployment templates of that project fork from it, so those pages stay shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from phemeral import network, sandbox
from phemeral.errors import BootFailed
from phemeral.runtime import procs
from phemeral.runtime.deployment import DeploymentRuntime, Supervision
from phemeral.runtime.template import TemplateProcess

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
    "hypercorn": ["hypercorn.config", "hypercorn.asyncio.run", "hypercorn.utils"],
    "gunicorn": [
        "gunicorn.app.wsgiapp",
        "gunicorn.workers.sync",
        "gunicorn.glogging",
        "gunicorn.http.wsgi",
        "gunicorn.sock",
    ],
}


@dataclass
class SharedTemplate:
    """A framework template shared by the deployments of one project with one dependency set."""

    key: str
    template: TemplateProcess
    venv: Path
    cgroup: sandbox.Cgroup | None
    netns: network.Netns | None
    users: set[str] = field(default_factory=set)
    logs: list[asyncio.Future[None]] = field(default_factory=list)
    learned: bool = False
    releases_view: Path | None = None  # where the forks' writable app views appear inside


class SharedTemplates:
    """Launches shared templates on first use (single-flight), closes them with their last user."""

    def __init__(self, sup: Supervision) -> None:
        self.sup = sup
        self.by_key: dict[str, SharedTemplate] = {}
        self._starting: dict[str, asyncio.Future[SharedTemplate]] = {}

    def get(self, key: str | None) -> SharedTemplate | None:
        return self.by_key.get(key) if key else None

    async def acquire(self, dep: DeploymentRuntime) -> SharedTemplate:
        """The deployment's shared template, launched if needed; the deployment now uses it."""
        release = dep.release
        key = f"{release.project}:{release.lock_hash}:{release.python_version}"
        if release.allow:  # forks live in its network namespace: one allow-list per template
            allow = ",".join(f"{e.host}:{e.port}" for e in sorted(set(release.allow), key=str))
            key += ":" + hashlib.sha256(allow.encode()).hexdigest()[:12]
        shared = self.by_key.get(key)
        if shared is None or not shared.template.alive:
            starting = self._starting.get(key)
            if starting is None:
                starting = asyncio.ensure_future(self._launch(key, dep))
                self._starting[key] = starting
                starting.add_done_callback(lambda _f: self._starting.pop(key, None))
            shared = await asyncio.shield(starting)
        shared.users.add(dep.release.deployment_id)
        dep.shared_key = shared.key
        return shared

    async def _launch(self, key: str, dep: DeploymentRuntime) -> SharedTemplate:
        sup, release, app, server = self.sup, dep.release, dep.release.app, dep.server
        assert server is not None
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        cgroup = await sup.launcher.create_cgroup("s-" + digest, f"the shared template {key}")
        netns = await sup.launcher.create_network(release.allow, f"the shared template {key}")
        releases_view = sup.views.shared_releases(key, release.path.parent)
        spec = sup.launcher.shared_spec(release, releases_view, netns=netns)
        template = TemplateProcess(lambda _pid, _code, _sig: None)

        def argv_for(fd: int) -> list[str]:
            return sup.launcher.template_argv(release, fd, spec, cgroup)

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await template.launch(argv_for, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            await sup.launcher.remove_network(netns)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        shared = SharedTemplate(
            key, template, release.venv, cgroup, netns=netns, releases_view=releases_view
        )
        shared.logs = sup.attach_output(dep, "shared-template", out_r, err_r, tee=False)
        sup.records.write_shared(key, process.pid, cgroup)
        await template.preload(
            (FRAMEWORK_PRELOAD.get(app.framework, []) if app is not None else [])
            + SERVER_PRELOAD.get(server.server, []),
            timeout=sup.settings.boot_timeout,
        )
        if not template.alive:
            await self.close(shared)
            raise BootFailed("the shared template process ended while importing the framework")
        self.by_key[key] = shared
        return shared

    async def release(self, dep: DeploymentRuntime) -> None:
        """The deployment no longer uses its shared template; the last user closes it."""
        key, dep.shared_key = dep.shared_key, None
        shared = self.get(key)
        if shared is None:
            return
        shared.users.discard(dep.release.deployment_id)
        if not shared.users:
            await self.close(shared)

    async def close(self, shared: SharedTemplate) -> None:
        if self.by_key.get(shared.key) is shared:
            del self.by_key[shared.key]
        await shared.template.close(timeout=self.sup.stop_timeout)
        await self.sup.capture.drain(shared.logs, 1.0)
        if shared.cgroup is not None:
            await asyncio.to_thread(shared.cgroup.remove)
        await asyncio.to_thread(self.sup.views.close_shared, shared.key)
        await self.sup.launcher.remove_network(shared.netns)
        self.sup.records.remove_shared(shared.key)

    async def close_all(self) -> None:
        for shared in list(self.by_key.values()):
            await self.close(shared)

    def figures(self) -> list[dict[str, object]]:
        """Key, deployments using it and its own USS in kB for each shared template (the whole
        sandboxed tree, less the per-deployment templates forked from it)."""
        return [
            {"key": s.key, "deployments": sorted(s.users), "memory_kb": self.own_kb(s)}
            for s in self.by_key.values()
        ]

    def own_kb(self, shared: SharedTemplate) -> int:
        """USS of a shared template's sandboxed tree, less the per-deployment templates."""
        total = procs.tree_uss_kb(shared.template.host_pid or 0)
        for did in shared.users:
            dep = self.sup.deployments.get(did)
            if dep is not None and dep.template is not None and dep.template.host_pid:
                total -= procs.tree_uss_kb(dep.template.host_pid)
        return total
