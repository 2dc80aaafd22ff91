"""The release phase: a deployment's release command, run once after its build.

It runs before the boot check and before the current pointer can move, in the deployment's own
sandbox (the same `Launcher` spec as its app processes: release, venv, uid, network, limits), with
the deployment's environment variables and ``$PORT`` set (nothing listens there). Its output goes
to the build log's ``release`` stage, line by line, each stamped by the log. A non-zero exit or
running past the limit raises `ReleaseFailed`; what it started is killed either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time

from phemeral.errors import ReleaseFailed
from phemeral.models import BuildLog, Release
from phemeral.runtime import procs
from phemeral.runtime.appview import AppViews
from phemeral.runtime.launch import Launcher, free_port

MAX_LINE = 4096
MAX_LINES = 20_000  # beyond this the output is counted, not logged


async def _copy_output(stream: asyncio.StreamReader, log: BuildLog) -> None:
    lines = 0
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line longer than the stream limit: take what there is
            raw = await stream.read(MAX_LINE)
        if not raw:
            break
        lines += 1
        if lines <= MAX_LINES:
            log.write("release", raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE])
    if lines > MAX_LINES:
        log.write("release", f"… {lines - MAX_LINES} more lines of output not kept")


async def run_release_command(
    launcher: Launcher,
    release: Release,
    log: BuildLog,
    timeout: float,
    views: AppViews | None = None,
) -> float:
    """Run ``release.release_command``; the seconds it took, or `ReleaseFailed`.

    With ``views``, the app directory is a writable throwaway layer (what the command writes
    there, a SQLite file or compiled assets, is discarded with it, as on Heroku's release
    dynos); without, it is read-only."""
    command = release.release_command
    if not command:
        return 0.0
    source = release.release_command_source or "the repository"
    log.write("release", f"running the release command (from {source}): {command}")
    cgroup = await launcher.create_cgroup(
        f"{release.deployment_id}-release", f"the release of {release.deployment_id}"
    )
    env = launcher.env(release, free_port())
    key = f"{release.deployment_id}.release"
    view = views.command(key, "release", release.workdir, release.uid) if views else None
    # its own namespace: the public internet and the release's allow-list (its database)
    netns = await launcher.create_network(release.allow, f"the release of {release.deployment_id}")
    spec = launcher.spec(release, env, view, netns=netns)
    argv = launcher.argv(["/bin/sh", "-c", command], spec, cgroup)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        await _forget_view(views, key)
        await launcher.remove_network(netns)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
        raise
    assert proc.stdout is not None
    copying = asyncio.ensure_future(_copy_output(proc.stdout, log))
    try:
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            code = None
        except asyncio.CancelledError:
            _kill(proc)
            raise
        if code is None:
            _kill(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(copying), 5)
    finally:
        copying.cancel()
        if cgroup is not None:
            await asyncio.to_thread(cgroup.kill)
            await asyncio.to_thread(cgroup.remove)
        await _forget_view(views, key)
        await launcher.remove_network(netns)
    elapsed = time.monotonic() - started
    if code is None:
        raise ReleaseFailed(
            f"the release command ran past its {timeout:g} s limit and was stopped: {command}"
        )
    if code != 0:
        raise ReleaseFailed(f"the release command exited with code {code}: {command}")
    log.write("release", f"release command finished in {elapsed:.1f} s")
    return elapsed


async def _forget_view(views: AppViews | None, key: str) -> None:
    """Unmount and delete the release's throwaway layer."""
    if views is None:
        return
    gone = views.end_instance(key, "release")
    dropped = views.drop(key)
    for directory in [*gone, *([dropped] if dropped else [])]:
        await asyncio.to_thread(shutil.rmtree, directory, True)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """The whole tree (its cgroup, when it has one, is emptied after)."""
    if proc.returncode is None:
        procs.kill_tree(proc.pid)
