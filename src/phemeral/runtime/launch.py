"""How an app process is launched: its environment, sandbox, cgroup and argv.

Every process of a deployment (pre-commands, templates, custom start commands) and every
shared framework template starts through a `Launcher`: the release's venv first on PATH, the
release, venv, template script and base interpreter bound read-only, the app's uid, the
deployment's cgroup when the host allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import socket
from dataclasses import replace
from pathlib import Path

from phemeral import network, sandbox
from phemeral.models import Endpoint, Release
from phemeral.settings import Settings

log = logging.getLogger(__name__)

ZYGOTE_SOURCE = Path(__file__).with_name("zygote.py")
# What a shared framework template's environment keeps of an app's.
SHARED_ENV = ("PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "VIRTUAL_ENV")


class Launcher:
    """Builds the sandboxed argv of app processes; creates their cgroups."""

    def __init__(self, settings: Settings, zygote_path: Path, *, cgroup_prefix: str) -> None:
        self.settings = settings
        self.zygote_path = zygote_path
        self.use_bwrap: bool | None = None  # resolved by `Runtime.start`
        self.networks: network.Networks | None = None  # resolved by `Runtime.start`
        self.cgroups = sandbox.Cgroup.supported()
        self.cgroup_prefix = cgroup_prefix  # this run's (`phemeral.runtime.runs`)

    def env(self, release: Release, port: int) -> dict[str, str]:
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

    def spec(
        self,
        release: Release,
        env: dict[str, str],
        app_view: Path | None = None,
        *,
        netns: network.Netns | None = None,
    ) -> sandbox.SandboxSpec:
        """A deployment's own sandbox: its release, run from its working directory; with an
        ``app_view`` (a writable overlay of the app directory) bound at the app's own path; in
        ``netns`` (its network namespace) when there is one."""
        mounts = ((app_view, release.workdir, True),) if app_view is not None else ()
        return self._spec(release, release.path, release.workdir, env, mounts, netns)

    def shared_spec(
        self,
        release: Release,
        releases_view: Path | None = None,
        *,
        netns: network.Netns | None = None,
    ) -> sandbox.SandboxSpec:
        """A shared framework template's sandbox: every release of the project, no app env
        (the releases dir through ``releases_view``, where the forks' app views appear)."""
        env = self.env(release, 8000)
        releases_dir = release.path.parent
        shared_env = {k: env[k] for k in SHARED_ENV}
        if releases_view is None:
            return self._spec(release, releases_dir, releases_dir, shared_env, (), netns)
        spec = self._spec(release, release.venv, releases_dir, shared_env, (), netns)
        return replace(spec, mounts=((releases_view, releases_dir, False),))

    def _spec(
        self,
        release: Release,
        root: Path,
        chdir: Path,
        env: dict[str, str],
        mounts: tuple[tuple[Path, Path, bool], ...] = (),
        netns: network.Netns | None = None,
    ) -> sandbox.SandboxSpec:
        ro = [root, release.venv, self.zygote_path, *interpreter_dirs(release.venv)]
        return sandbox.SandboxSpec(
            uid=release.uid,
            mounts=mounts,
            ro_binds=tuple(dict.fromkeys(ro)),
            chdir=chdir,
            env=env,
            # Its own network namespace (public internet, its allow-list); the host's network
            # only where namespaces are unavailable (`network.resolve` warned at start).
            share_net=netns is None,
            netns=netns.path if netns is not None else None,
            die_with_parent=False,  # apps outlive a platform restart; records find them
            memory_mb=self.settings.app_memory_mb,
            pids_max=self.settings.app_pids_max,
        )

    def argv(
        self, argv: list[str], spec: sandbox.SandboxSpec, cgroup: sandbox.Cgroup | None
    ) -> list[str]:
        wrapped = sandbox.wrap(argv, spec, use_bwrap=bool(self.use_bwrap))
        if cgroup is not None:
            return [*cgroup.join_argv(), *wrapped]
        return wrapped

    def template_argv(
        self, release: Release, fd: int, spec: sandbox.SandboxSpec, cgroup: sandbox.Cgroup | None
    ) -> list[str]:
        """The sandboxed template command line, its control socket passed on ``fd``."""
        spec = dataclasses.replace(spec, pass_fds=(*spec.pass_fds, fd))
        return self.argv(self.zygote_argv(release, fd), spec, cgroup)

    def zygote_argv(self, release: Release, fd: int) -> list[str]:
        """The template script run by the release's own python, its control socket ``fd``."""
        return [str(release.venv / "bin" / "python"), str(self.zygote_path), str(fd)]

    async def create_network(self, allow: tuple[Endpoint, ...], what: str) -> network.Netns | None:
        """A network namespace for ``what`` (None: the host's network is shared)."""
        if self.networks is None:
            return None
        return await asyncio.to_thread(self.networks.create, allow)

    async def remove_network(self, netns: network.Netns | None) -> None:
        if netns is not None and self.networks is not None:
            await asyncio.to_thread(self.networks.remove, netns)

    async def create_cgroup(self, suffix: str, what: str) -> sandbox.Cgroup | None:
        """This data dir's cgroup ``suffix`` with the app limits; None when the host refuses."""
        if not self.cgroups:
            return None
        try:
            return await asyncio.to_thread(
                sandbox.Cgroup(self.cgroup_prefix + suffix).create,
                memory_mb=self.settings.app_memory_mb,
                pids_max=self.settings.app_pids_max,
                cpu_quota=1.0,
            )
        except OSError as exc:
            log.warning("no cgroup for %s: %s", what, exc)
            return None

    @staticmethod
    async def exec(argv: list[str], stdout: int, stderr: int) -> asyncio.subprocess.Process:
        """Start ``argv`` in its own session, no stdin, output to the given pipe ends."""
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )


def instance_id() -> str:
    return "i-" + secrets.token_hex(4)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def interpreter_dirs(venv: Path) -> list[Path]:
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


def oom_kills(cgroup: sandbox.Cgroup) -> int:
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
