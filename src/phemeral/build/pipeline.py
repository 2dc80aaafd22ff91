"""The build: a deployment's source becomes a release, one logged stage at a time.

    source → detect → python → install → verify → release

Every stage writes its own lines to the build log and raises `BuildError(stage=…)` with a reason
people can act on. Untrusted work (fetching, installing, importing) runs sandboxed as the app
uid under the build's cgroup and wall-clock limit; on failure or timeout the whole process tree
is killed and the half-built release directory removed. ``release.json`` is written last and
atomically, so nothing half-built is ever served.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path

from phemeral import network, sandbox
from phemeral.build import (
    archive,
    cache,
    git,
    install,
    interpreters,
    release,
    shared_files,
    verify,
    workspace,
)
from phemeral.build.runner import BuildContext
from phemeral.detect import Detection, detect, resolve_start_command, why_start_command
from phemeral.detect.servers import servers_in_command
from phemeral.errors import BuildError, BuildTimeout, PhemeralError
from phemeral.models import (
    ArchiveSource,
    BuildJob,
    BuildLog,
    BuildResult,
    CommitRelation,
    Release,
    StartCommandSource,
)
from phemeral.sandbox import Cgroup
from phemeral.settings import Settings

DEFAULT_PYTHON = "3.12"
SHARED_FILES = "shared-files"  # {data_dir}/shared-files: see `shared_files`
UV_INSTALLABLE = ("3.9", "3.10", "3.11", "3.12", "3.13")


def _minor_key(minor: str) -> tuple[int, ...]:
    return tuple(int(part) for part in minor.split("."))


class _Stage:
    """Which stage is running, so a failure or timeout is attributed to it."""

    def __init__(self, log: BuildLog) -> None:
        self.name = "source"
        self.log = log
        self.started = time.monotonic()

    def enter(self, name: str, headline: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.log.write(name, headline)

    def done(self, message: str) -> None:
        self.log.write(self.name, f"{message} ({time.monotonic() - self.started:.1f} s)")


async def build(job: BuildJob, log: BuildLog, settings: Settings) -> BuildResult:
    """Build ``job`` in place at ``job.release_dir``; returns the release, or raises BuildError."""
    stage = _Stage(log)
    started = time.monotonic()
    timeout = job.timeout or settings.build_timeout
    if job.uid is None and sandbox.is_root():
        raise BuildError("refusing to build as root: the project has no app uid", stage="source")
    ctx = BuildContext(
        log=log,
        uid=job.uid,
        deadline=started + timeout,
        timeout=timeout,
        use_bwrap=False,
        memory_mb=settings.build_memory_mb,
    )
    try:
        ctx.use_bwrap = sandbox.resolve_use_bwrap(settings.sandbox)
        if Cgroup.supported():
            ctx.cgroup = Cgroup(f"build-{job.deployment_id}").create(
                memory_mb=settings.build_memory_mb, pids_max=4096, cpu_quota=settings.build_cpus
            )
        # Steps that need the network (fetch, install) share one namespace of the build's own.
        ctx.networks = await asyncio.to_thread(network.resolve, settings.network, settings.data_dir)
        async with asyncio.timeout(timeout):
            result = await _stages(job, settings, ctx, stage)
        if ctx.workspace is not None:
            await asyncio.to_thread(_keep_release, ctx)
        await asyncio.to_thread(_share_libraries, ctx, job.release_dir / ".venv", settings)
        log.write("release", f"build finished in {time.monotonic() - started:.1f} s")
        return result
    except TimeoutError:
        _cleanup_failed(job, ctx)
        error = BuildTimeout(
            f"the build ran past its {timeout:.0f} s limit and was stopped (a project may "
            "raise its own limit: phemeral projects set NAME --build-timeout SECONDS)",
            stage=stage.name,
        )
        log.write(stage.name, f"build failed: {error.message}")
        raise error from None
    except BuildError as exc:
        full = _out_of_disk(ctx, exc.stage, exc.message)
        _cleanup_failed(job, ctx)
        if full is not None:
            log.write(full.stage, f"build failed: {full.message}")
            raise full from exc
        log.write(exc.stage, f"build failed: {exc.message}")
        raise
    except PhemeralError as exc:
        failure = _out_of_disk(ctx, stage.name, exc.message) or BuildError(
            exc.message, stage=stage.name
        )
        _cleanup_failed(job, ctx)
        log.write(stage.name, f"build failed: {failure.message}")
        raise failure from exc
    except OSError as exc:  # the platform's own writes (unpacking, copying) hit the quota
        full = _out_of_disk(ctx, stage.name, str(exc))
        _cleanup_failed(job, ctx)
        if full is None:
            raise
        log.write(stage.name, f"build failed: {full.message}")
        raise full from exc
    except asyncio.CancelledError:
        _cleanup_failed(job, ctx)
        raise
    finally:
        if ctx.cgroup is not None:
            # synchronously: a cancelled build (server shutting down) must still clean up
            ctx.cgroup.remove()
        if ctx.workspace is not None:
            workspace.remove(ctx.workspace)
        if ctx.netns is not None and ctx.networks is not None:
            ctx.networks.remove(ctx.netns)
        shutil.rmtree(job.release_dir / ".home", ignore_errors=True)


async def _stages(
    job: BuildJob, settings: Settings, ctx: BuildContext, stage: _Stage
) -> BuildResult:
    release_dir = job.release_dir
    ancestry: dict[str, CommitRelation] = {}
    src = release_dir / "src"
    venv = release_dir / ".venv"
    home = release_dir / ".home"

    # 1. Source ---------------------------------------------------------------------------
    stage.enter("source", _describe_source(job))
    ctx.workspace = await asyncio.to_thread(
        _prepare_dirs, settings, job.deployment_id, release_dir, job.uid, [venv, home]
    )
    if ctx.workspace is not None:
        stage.log.write("source", f"disk quota of this build: {ctx.workspace.size_mb} MB")
    ctx.rw_binds = [src, venv, home]
    if isinstance(job.source, ArchiveSource):
        limits = archive.ArchiveLimits(max_bytes=max(1 << 30, settings.max_upload_mb << 22))
        stats = await asyncio.to_thread(archive.unpack, job.source.path, src, limits)
        await asyncio.to_thread(_chown_tree, src, job.uid)
    else:
        await git.fetch(job.source, src, ctx, allow_local=settings.allow_local_repos)
        if job.source.compare:
            ancestry = await git.ancestry(
                job.source, release_dir, ctx, allow_local=settings.allow_local_repos
            )
        stats = await asyncio.to_thread(_measure, src)
    await asyncio.to_thread(src.chmod, 0o700)  # the app's uid only (it owns src/)
    stage.done(f"source ready: {stats.describe()}")
    ctx.check_deadline("source")

    # 2. Detect ---------------------------------------------------------------------------
    stage.enter("detect", "detecting the project")
    pythons = await asyncio.to_thread(interpreters.discover_pythons, settings.python_paths)
    minors = [p.minor for p in pythons]
    default = DEFAULT_PYTHON if DEFAULT_PYTHON in minors or not minors else minors[-1]
    # with install_missing_python, any version uv can install is acceptable to detection
    offered = sorted(set(minors) | set(UV_INSTALLABLE), key=_minor_key)
    choices = offered if settings.install_missing_python else minors
    custom = bool(job.custom_start_command and job.custom_start_command.strip())
    detection = await asyncio.to_thread(
        lambda: detect(
            src,
            overrides=job.overrides,
            available_versions=choices,
            default_version=default,
            need_app=not custom,  # a custom command needs no autodetected entry point
        )
    )
    for line in detection.summary().splitlines():
        ctx.log.write("detect", line)
    command, command_source = resolve_start_command(job.custom_start_command, detection)
    ctx.log.write("detect", why_start_command(job.custom_start_command, detection))
    workdir = (src / detection.root_dir).resolve()
    if workdir != src.resolve() and src.resolve() not in workdir.parents:
        raise BuildError(
            f"root directory {detection.root_dir!r} is outside the source", stage="detect"
        )
    stage.done("detection complete")

    # 3. Python ---------------------------------------------------------------------------
    stage.enter("python", f"looking for Python {detection.python_version}")
    interpreter = interpreters.choose(pythons, detection.python_version)
    if interpreter is None and settings.install_missing_python:
        interpreter = await _install_python(detection.python_version, settings, ctx)
    if interpreter is None:
        have = ", ".join(minors) or "none"
        how = (
            "uv could not install it (see above)"
            if settings.install_missing_python
            else "the server does not download interpreters (`phemeral serve "
            "--install-missing-python` allows it)"
        )
        raise BuildError(
            f"Python {detection.python_version} (from {detection.python_version_source}) is not "
            f"available on this server and {how}; available versions: {have}. Pin one of them "
            "in .python-version, or set the project's python_version",
            stage="python",
        )
    prefix = interpreter.path.resolve().parent.parent
    ctx.ro_binds.append(prefix)
    if not ctx.use_bwrap and job.uid is not None:
        # without bubblewrap the app uid walks the real paths: each must be traversable
        for needed in (settings.data_dir, prefix, install.find_uv()):
            blocked = unreachable(needed)
            if blocked is not None:
                raise BuildError(
                    f"without bubblewrap the app uid cannot reach {needed}: {blocked} is not "
                    f"traversable by others (chmod o+x {blocked}), or install bubblewrap",
                    stage="python",
                )
    stage.done(f"using Python {interpreter.version} at {interpreter.path}")

    # 4. Install --------------------------------------------------------------------------
    stage.enter("install", f"installing dependencies with {detection.package_manager}")
    project_cache = await asyncio.to_thread(cache.prepare_project, settings.data_dir, job.uid)
    extras = _extra_packages(detection, command, command_source)
    plan = install.InstallPlan(
        manager=detection.package_manager,
        project_dir=workdir,
        python=interpreter.path,
        python_version=interpreter.version,
        venv=venv,
        cache_dir=project_cache.uv,
        keys_dir=project_cache.keys,
        project=job.project,
        extra_packages=extras,
        lock_root=_find_upwards(workdir, src, "uv.lock"),
        home=home,
    )
    prefetched = False
    if cache.overlays_supported(job.uid):
        # the only step that writes the project's cache; it runs no code of the project
        prefetched = await install.prefetch(plan, ctx)
    overlay = (
        ctx.workspace.cache
        if ctx.workspace is not None
        else cache.overlay_dir(settings.data_dir, job.deployment_id)
    )
    view = await asyncio.to_thread(cache.mount_view, job.uid, project_cache.uv, overlay)
    try:
        lock_hash = await install.install(
            dataclasses.replace(plan, cache_dir=view), ctx, bytecode=not prefetched
        )
    except BuildError as exc:
        hint = install.older_python_hint(
            exc.message, detection.python_version, detection.python_version_source, minors
        )
        if hint is None:
            raise
        raise BuildError(f"{exc.message}\n{hint}", stage=exc.stage) from exc
    finally:
        await asyncio.to_thread(cache.unmount, overlay)
    stage.done("dependencies installed")

    # 5. Verify ---------------------------------------------------------------------------
    app = detection.app_spec if command_source is StartCommandSource.AUTODETECTED else None
    stage.enter("verify", "checking the app imports in the built environment")
    try:
        await verify.verify(
            app,
            workdir=workdir,
            app_dir=detection.app_dir,
            venv=venv,
            user_env=job.env,
            home=home,
            ctx=ctx,
            command=command,
        )
    except BuildError as exc:
        hint = install.unpinned_import_hint(
            exc.message, detection.python_version, detection.python_version_source, minors
        )
        if hint is None:
            raise
        raise BuildError(f"{exc.message}\n{hint}", stage=exc.stage) from exc
    stage.done("verified")

    # 6. Release --------------------------------------------------------------------------
    stage.enter("release", "recording the release")
    release_cmd = detection.declared.release
    built = Release(
        deployment_id=job.deployment_id,
        project=job.project,
        environment=job.environment,
        path=release_dir,
        workdir=workdir,
        venv=venv,
        python_version=interpreter.version,
        start_command=command,
        start_command_source=command_source,
        app=app,
        env=dict(job.env),
        uid=job.uid,
        lock_hash=lock_hash,
        allow=job.allow,
        release_command=release_cmd.command if release_cmd else None,
        release_command_source=release_cmd.source if release_cmd else None,
        release_timeout=_number(detection.settings.get("release_timeout")),
        processes={name: p.command for name, p in detection.declared.processes.items()},
        health_check_path=str(detection.settings.get("health_check_path") or "/"),
        idle_timeout=_number(detection.settings.get("idle_timeout")),
    )
    await asyncio.to_thread(shutil.rmtree, home, True)
    await asyncio.to_thread(release.write_release, built)
    stage.done(f"release {job.deployment_id} ready: {command}")
    payload = detection.to_json()
    payload["start_command"] = command
    payload["start_command_source"] = command_source.value
    if command_source is StartCommandSource.CUSTOM:
        payload["sources"] = {**detection.sources, "start_command": "project setting"}
    return BuildResult(release=built, detection=payload, ancestry=ancestry)


def _describe_source(job: BuildJob) -> str:
    if isinstance(job.source, ArchiveSource):
        return "unpacking the uploaded archive"
    return f"fetching {job.source.url} at {job.source.commit[:12]}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _extra_packages(
    detection: Detection, command: str, source: StartCommandSource
) -> tuple[str, ...]:
    """Servers the chosen command runs that the dependencies lack: the autodetected one, or
    any named in a custom or declared command (every part of a compound command counts:
    ``python manage.py migrate && gunicorn …``)."""
    if source is StartCommandSource.AUTODETECTED:
        return (detection.missing_server,) if detection.missing_server else ()
    found = [s for s in servers_in_command(command) if detection.lacks(s)]
    declared_missing = detection.missing_server
    if (
        source is not StartCommandSource.CUSTOM
        and declared_missing
        and declared_missing not in found
    ):
        found.append(declared_missing)
    return tuple(found)


def _find_upwards(start: Path, stop: Path, name: str) -> Path | None:
    here = start
    while True:
        if (here / name).is_file():
            return here
        if here == stop or here.parent == here:
            return None
        here = here.parent


async def _install_python(
    minor: str, settings: Settings, ctx: BuildContext
) -> interpreters.Interpreter | None:
    """``uv python install`` (allowed by configuration); None when it cannot."""
    ctx.log.write("python", f"Python {minor} is missing; installing it with uv")
    proc = await asyncio.create_subprocess_exec(
        str(install.find_uv()),
        "python",
        "install",
        minor,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "manual"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    for line in out.decode("utf-8", "replace").splitlines()[-10:]:
        ctx.log.write("python", line)
    if proc.returncode != 0:
        return None
    found = await asyncio.to_thread(interpreters.discover_pythons, settings.python_paths)
    return interpreters.choose(found, minor)


# -- host-side file system work (trusted, runs in a worker thread) -----------------------------


def _prepare_dirs(
    settings: Settings, deployment_id: str, release_dir: Path, uid: int | None, owned: list[Path]
) -> workspace.Workspace | None:
    """Release dir root-owned 0711 (the app cannot swap release.json), on the build's own
    quota-limited file system when the host allows; its parts owned by uid."""
    if release_dir.exists():
        raise BuildError(f"release directory {release_dir} already exists", stage="source")
    release_dir.mkdir(parents=True, mode=0o711)
    # apps/, apps/<project>/, releases/: traversable, never listable by other host users
    for folder in release_dir.relative_to(settings.data_dir).parents:
        if folder.parts and (settings.data_dir / folder).stat().st_uid == os.geteuid():
            (settings.data_dir / folder).chmod(0o711)
    _make_traversable(settings.data_dir, release_dir)
    space = None
    if workspace.supported(settings.build_disk_mb):
        space = workspace.create(
            settings.data_dir, deployment_id, release_dir, settings.build_disk_mb
        )
    for path in owned:
        path.mkdir(mode=0o700)  # the app's uid only: no other host user reads a release
        if uid is not None:
            os.chown(path, uid, uid)
    return space


def _keep_release(ctx: BuildContext) -> None:
    """Copy the finished release off the build's file system, then drop that file system."""
    assert ctx.workspace is not None
    if ctx.cgroup is not None:
        ctx.cgroup.kill()  # nothing the build started may still write
    started = time.monotonic()
    used = ctx.workspace.used_mb()
    workspace.keep_release(ctx.workspace)
    workspace.remove(ctx.workspace)
    ctx.workspace = None
    ctx.log.write(
        "release",
        f"release copied off the build's disk ({used} MB in {time.monotonic() - started:.1f} s)",
    )


def _share_libraries(ctx: BuildContext, venv: Path, settings: Settings) -> None:
    """The venv's shared libraries hard-linked to one copy per content (`shared_files`), so
    identical ones of different projects share their page cache; unused copies removed."""
    store = settings.data_dir / SHARED_FILES
    done = shared_files.share(venv, store)
    shared_files.remove_unused(store)
    if done.files:
        ctx.log.write("release", done.describe())


def _out_of_disk(ctx: BuildContext, stage: str, detail: str) -> BuildError | None:
    """The plain reason when the build's disk quota is what stopped it, else None."""
    if ctx.workspace is None or not ctx.workspace.full():
        return None
    tail = detail.strip().splitlines()[-1] if detail.strip() else ""
    return BuildError(
        f"the build ran out of disk space: a build may write {ctx.workspace.size_mb} MB "
        "(source, virtual environment, downloads; the server's --build-disk-mb)"
        + (f"; last error: {tail}" if tail else ""),
        stage=stage,
    )


def unreachable(path: Path) -> Path | None:
    """The first ancestor of ``path`` that other users cannot traverse, or None (reads only)."""
    for parent in reversed(path.parents):
        try:
            if parent.stat().st_mode & 0o001 == 0:
                return parent
        except OSError:
            return parent
    return None


def _make_traversable(data_dir: Path, leaf: Path) -> None:
    """o+x on every directory from data_dir down to leaf (uid-dropped tools must reach it)."""
    here = leaf
    chain = []
    while True:
        chain.append(here)
        if here == data_dir or here.parent == here:
            break
        here = here.parent
    for directory in chain:
        with contextlib.suppress(OSError):
            mode = directory.stat().st_mode & 0o7777
            if mode & 0o011 != 0o011:
                directory.chmod(mode | 0o011)


def _chown_tree(root: Path, uid: int | None) -> None:
    if uid is None:
        return
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(Path(dirpath) / name, uid, uid)


def _measure(root: Path) -> archive.ArchiveStats:
    files = 0
    size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                size += path.lstat().st_size
                files += 1
    return archive.ArchiveStats(files=files, bytes=size)


def _cleanup_failed(job: BuildJob, ctx: BuildContext) -> None:
    """Kill what the build left running and remove the half-built release."""
    if ctx.cgroup is not None:
        ctx.cgroup.kill()
    if ctx.workspace is not None:
        workspace.remove(ctx.workspace)
        ctx.workspace = None
    shutil.rmtree(job.release_dir, ignore_errors=True)
