"""A deployment's life and the build queue.

create_deployment (upload or push) ─► BuildQueue ─► run_build:
    builder(job) ─► runtime.boot_check(release) ─► runtime.register(release)
    ─► finish_successful (compare-and-set of the current pointer) | finish_failed
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from phemeral.deploys.environments import deployment_runtime_env
from phemeral.deploys.github_auth import github_auth
from phemeral.deploys.plane import ControlPlane, now
from phemeral.deploys.promotion import move_pointer, should_promote
from phemeral.deploys.retention import collect_releases
from phemeral.deploys.routing import publish, publish_soon
from phemeral.deploys.services import deployment_endpoints, snapshot_variables
from phemeral.errors import (
    BuildError,
    GitHubRefused,
    InvalidInput,
    PhemeralError,
    SourceError,
    StoreUnavailable,
)
from phemeral.github.events import after_parent
from phemeral.github.repository import is_local
from phemeral.github.tokens import TokenProvider
from phemeral.models import (
    ArchiveSource,
    BuildJob,
    BuildLog,
    BuildResult,
    DeploymentStatus,
    GitSource,
    ProjectOverrides,
    Release,
    StartCommandSource,
    TriggerKind,
)
from phemeral.store.names import new_deployment_id
from phemeral.store.releases import release_to_json
from phemeral.store.schema import BuildLogRow, Deployment, Domain, Environment, Project
from phemeral.store.views import get_deployment, get_environment, get_project

log = logging.getLogger("phemeral.deploys")
T = TypeVar("T")

SOURCE_STAGE = "source"  # the build stage that fetches a repository (phemeral.build.git)
STORE_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
MIN_FREE_BYTES = 1 << 30  # a build needs room for a venv; below this it is refused


@dataclass(frozen=True)
class Trigger:
    """Why a deployment exists: a manual upload, or a push (commit, branch, pusher, delivery)."""

    kind: TriggerKind
    actor: str
    commit: str | None = None
    branch: str | None = None
    pusher: str | None = None
    delivery_id: str | None = None
    push_seq: int | None = None  # ordering of pushes; None: next in arrival order
    repository: str | None = None  # GitHub's owner/name, where its statuses go
    # the push's ``before``: a known push of that commit to the environment orders before it
    parent_commit: str | None = None


def create_deployment(
    cp: ControlPlane,
    project: str,
    environment: str,
    trigger: Trigger,
    *,
    archive: Path | None = None,
    promote: bool = True,
) -> tuple[Deployment, bool]:
    """Persist a new `building` deployment (and move its upload in place); then queue it.

    Its route is published soon after, off the caller's path (`publish_soon`): a building
    deployment changes no environment's route, only its own host's "still building" page.

    Returns ``(deployment, created)``: a push whose delivery id was seen before returns the
    deployment it created the first time, with ``created`` False.
    """
    if (archive is None) != (trigger.kind == TriggerKind.PUSH):
        raise InvalidInput("a manual deployment needs an archive; a push deployment a commit")
    with cp.store.write() as s:
        if trigger.delivery_id:
            seen = s.scalar(select(Deployment).where(Deployment.delivery_id == trigger.delivery_id))
            if seen is not None:
                return seen, False
        proj = get_project(s, project)
        env = get_environment(s, proj, environment, lock=True)
        if trigger.kind == TriggerKind.PUSH and not proj.repo_url:
            raise InvalidInput(f"project {project} has no repository to fetch commits from")
        push_seq = None
        if trigger.kind == TriggerKind.PUSH:
            push_seq = trigger.push_seq if trigger.push_seq is not None else env.last_push_seq + 1
            if trigger.parent_commit is not None:
                push_seq = after_parent(push_seq, _parent_sequence(s, env, trigger.parent_commit))
            env.last_push_seq = max(env.last_push_seq, push_seq)
        variables, sources = snapshot_variables(cp, s, env)
        if proj.workers is not None and "WEB_CONCURRENCY" not in variables:
            variables["WEB_CONCURRENCY"] = str(proj.workers)  # the project's worker count
            sources["WEB_CONCURRENCY"] = "project setting workers"
        deployment = Deployment(
            id=_unused_deployment_id(s),
            project_id=proj.id,
            environment_id=env.id,
            status=DeploymentStatus.BUILDING,
            trigger=trigger.kind,
            commit_sha=trigger.commit,
            branch=trigger.branch,
            pusher=trigger.pusher,
            delivery_id=trigger.delivery_id,
            github_repo=trigger.repository,
            push_seq=push_seq,
            promote_on_success=promote if trigger.kind == TriggerKind.MANUAL else True,
            created_by=trigger.actor,
            custom_start_command=proj.start_command,
            # Snapshot of the command now: custom if one is saved, else filled in by the build
            # with the autodetected default. Later changes to the project never reach it.
            start_command=proj.start_command,
            start_command_source=StartCommandSource.CUSTOM if proj.start_command else None,
            env_snapshot=cp.box.encrypt(json.dumps(variables)),
            env_sources=sources or None,
            created_at=now(),
        )
        s.add(deployment)
    if archive is not None:
        cp.uploads_dir.mkdir(parents=True, exist_ok=True)
        archive.replace(cp.upload_path(deployment.id))
    cp.logs.build_log(deployment.id).write("queue", "queued: waiting for a build slot")
    publish_soon(cp)  # its {id} host says "building" a moment later; nothing else changes
    return deployment, True


def _unused_deployment_id(s: Session) -> str:
    while True:
        candidate = new_deployment_id()
        taken = select(
            or_(
                exists().where(Deployment.id == candidate),
                exists().where(Domain.label == candidate),
            )
        )
        if not s.scalar(taken):
            return candidate


def _parent_sequence(s: Session, env: Environment, commit: str) -> int | None:
    """The newest sequence of a push of ``commit`` to ``env`` (the parent of a new push)."""
    return s.scalar(
        select(func.max(Deployment.push_seq)).where(
            Deployment.environment_id == env.id,
            Deployment.commit_sha == commit,
            Deployment.trigger == TriggerKind.PUSH,
        )
    )


def deploy(
    cp: ControlPlane,
    project: str,
    environment: str,
    trigger: Trigger,
    *,
    archive: Path | None = None,
    promote: bool = True,
) -> tuple[Deployment, bool]:
    """Create a deployment and queue its build (thread-safe; for API and webhook handlers)."""
    deployment, created = create_deployment(
        cp, project, environment, trigger, archive=archive, promote=promote
    )
    if created and cp.queue is not None:
        cp.queue.submit(deployment.id, project)
    return deployment, created


def prepare_job(cp: ControlPlane, deployment_id: str) -> BuildJob:
    """Everything the builder needs, read once from the database."""
    with cp.store.write() as s:
        d = get_deployment(s, deployment_id)
        project = s.get_one(Project, d.project_id)
        env = s.get_one(Environment, d.environment_id)
        d.started_at = now()
        source: ArchiveSource | GitSource
        if d.trigger == TriggerKind.PUSH:
            assert project.repo_url and d.commit_sha
            source = GitSource(  # its token comes later, from `github_source_token`
                url=project.repo_url,
                commit=d.commit_sha,
                compare=_commits_to_compare(s, env, d),
            )
        else:
            source = ArchiveSource(path=cp.upload_path(d.id))
        return BuildJob(
            deployment_id=d.id,
            project=project.name,
            environment=env.name,
            source=source,
            overrides=ProjectOverrides(
                root_dir=project.root_dir,
                python_version=project.python_version,
                package_manager=project.package_manager,
            ),
            custom_start_command=d.custom_start_command,
            env=deployment_runtime_env(cp, s, d, env),
            release_dir=cp.release_dir(project.name, d.id),
            uid=project.uid if os.geteuid() == 0 else None,
            timeout=build_timeout(cp.settings.build_timeout, project.build_timeout),
            allow=deployment_endpoints(cp, s, d),
        )


COMPARE_RECENT_PUSHES = 10


def _commits_to_compare(s: Session, env: Environment, d: Deployment) -> tuple[str, ...]:
    """The current deployment's commit, then recent push commits of the environment: whichever
    is current when this build finishes, its relation to ours is then known."""
    commits: list[str] = []
    if env.current_deployment_id:
        current = s.get(Deployment, env.current_deployment_id)
        if current is not None and current.commit_sha:
            commits.append(current.commit_sha)
    recent = s.scalars(
        select(Deployment.commit_sha)
        .where(
            Deployment.environment_id == env.id,
            Deployment.trigger == TriggerKind.PUSH,
            Deployment.id != d.id,
            Deployment.commit_sha.is_not(None),
        )
        .order_by(Deployment.created_at.desc())
        .limit(COMPARE_RECENT_PUSHES)
    )
    commits += [c for c in recent if c]
    return tuple(dict.fromkeys(commits))


def build_timeout(default: float, project: int | None) -> float:
    """A project's own limit when it set one, else the server's (pure)."""
    return float(project) if project else default


def enough_disk(free_bytes: int) -> bool:
    return free_bytes >= MIN_FREE_BYTES


def resolved_start_command(custom: str | None, release: Release) -> tuple[str, StartCommandSource]:
    """The command snapshot of a deployment: its saved custom command, else the one the build
    chose (the repository's declaration, else the autodetected default).

    The builder resolves the command from ``job.custom_start_command`` (the snapshot taken at
    creation); a release that disagrees with that snapshot is refused.
    """
    if custom:
        if release.start_command != custom:
            raise BuildError(
                "the build did not use the project's custom start command", stage="release"
            )
        return custom, StartCommandSource.CUSTOM
    if release.start_command_source == StartCommandSource.CUSTOM:
        raise BuildError("the build reported a custom command none was saved", stage="release")
    return release.start_command, release.start_command_source


async def run_build(cp: ControlPlane, deployment_id: str) -> DeploymentStatus:
    """Build, boot-check, register and record one deployment; never raises for build failures."""
    build_log = cp.logs.build_log(deployment_id)
    build_log.write("queue", "build started")
    try:
        job = await asyncio.to_thread(prepare_job, cp, deployment_id)
        free = shutil.disk_usage(cp.settings.data_dir).free
        if not enough_disk(free):
            raise BuildError(
                f"insufficient disk: {free >> 20} MiB free in {cp.settings.data_dir}, a build "
                f"needs at least {MIN_FREE_BYTES >> 20} MiB",
                stage="build",
            )
        if cp.builder is None:
            raise BuildError("this server has no builder attached", stage="build")
        token = await github_source_token(cp, job, build_log)
        job = token.job
        limit = job.timeout or cp.settings.build_timeout
        # the builder stops itself at the limit; this is the backstop (cleanup included)
        try:
            result = await asyncio.wait_for(cp.builder(job, build_log, cp.settings), limit + 30)
        except (SourceError, BuildError) as exc:  # the builder reports a fetch as a source stage
            if isinstance(exc, BuildError) and exc.stage != SOURCE_STAGE:
                raise
            failed = await token.fetch_failed(exc)
            if failed is exc:
                raise
            raise failed from exc
        command, source = resolved_start_command(job.custom_start_command, result.release)
        await release_phase(cp, job, result.release, build_log)
        if cp.runtime is not None:
            build_log.write("boot", "checking that the app answers on $PORT")
            await cp.runtime.boot_check(result.release, build_log)
            cp.runtime.register(result.release)
        else:
            build_log.write("boot", "no runtime attached to this server: boot check skipped")
    except PhemeralError as exc:
        stage = getattr(exc, "stage", "boot" if exc.code.startswith("boot") else "build")
        return await _fail(cp, deployment_id, build_log, stage, exc.message)
    except TimeoutError:
        reason = "the build ran past its time limit (and did not stop itself)"
        return await _fail(cp, deployment_id, build_log, "build", reason)
    except Exception as exc:
        log.exception("build of %s crashed", deployment_id)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return await _fail(cp, deployment_id, build_log, "build", reason)
    finally:
        with contextlib.suppress(OSError):
            cp.upload_path(deployment_id).unlink(missing_ok=True)
    build_log.write("release", f"start command ({source}): {command}")
    await _until_stored(cp.logs.flush)
    await _until_stored(finish_successful, cp, deployment_id, result)
    await _until_stored(publish, cp)
    _tell_finished(cp, deployment_id, DeploymentStatus.SUCCESSFUL, None)
    _retain_later(cp, job.project)
    return DeploymentStatus.SUCCESSFUL


@dataclass(frozen=True)
class SourceToken:
    """What `github_source_token` gave the fetch: the token and its provider, or why none."""

    job: BuildJob
    used: tuple[TokenProvider, str] | None = None
    refused: str | None = None  # GitHub's answer when a token could not be had

    async def fetch_failed(self, exc: PhemeralError) -> PhemeralError:
        """The fetch failed: a token it used is dropped (perhaps revoked: the next build asks
        for a fresh one); one that could not be had is named in the reason."""
        if self.used is not None:
            await self.used[0].rejected(self.used[1])
        if self.refused is None:
            return exc
        reason = f"{exc.message} (without a GitHub token: {self.refused})"
        return BuildError(reason, stage=SOURCE_STAGE)


async def github_source_token(cp: ControlPlane, job: BuildJob, build_log: BuildLog) -> SourceToken:
    """The job with the project's GitHub token for fetching its repository (an installation
    token, fresh for at least the refresh margin, when the project uses a GitHub App).

    Local repositories need none. A token that cannot be had is said in the build log, and the
    fetch goes on without one: a public repository still builds; a private one fails with
    GitHub's answer in its reason.
    """
    source = job.source
    if not isinstance(source, GitSource) or is_local(source.url):
        return SourceToken(job)
    auth = await asyncio.to_thread(github_auth, cp, job.project)
    if auth is None:
        return SourceToken(job)
    try:
        token = await auth.token()
    except GitHubRefused as exc:
        build_log.write("source", f"fetching without a GitHub token: {exc.message}")
        return SourceToken(job, refused=exc.message)
    build_log.write("source", f"fetching with the project's {auth.kind}")
    return SourceToken(replace(job, source=replace(source, token=token)), used=(auth, token))


async def release_phase(cp: ControlPlane, job: BuildJob, release: Release, log: BuildLog) -> None:
    """Run the release command, one deployment of an environment at a time (Heroku's release
    phase: after the build, before the boot check and the pointer; never on promote/rollback).
    Raises ReleaseFailed: the deployment fails and the current one stays current."""
    if not release.release_command:
        return
    if cp.runtime is None:
        log.write("release", "no runtime attached to this server: release command not run")
        return
    lock = cp.release_locks.setdefault((job.project, job.environment), asyncio.Lock())
    if lock.locked():
        log.write("release", f"waiting for another release command on {job.environment} to end")
    async with lock:
        await cp.runtime.run_release(release, log)


_RETENTION: set[asyncio.Task[None]] = set()


def _retain_later(cp: ControlPlane, project: str) -> None:
    """Release retention after a successful build, in the background (the runtime drains what
    it retires, which must not hold the build slot)."""

    async def retain() -> None:
        try:
            await collect_releases(cp, project)
        except Exception:  # retention never fails a deployment; the next build tries again
            log.exception("release retention for %s failed", project)

    task = asyncio.get_running_loop().create_task(retain(), name=f"retention-{project}")
    _RETENTION.add(task)
    task.add_done_callback(_RETENTION.discard)


async def _fail(
    cp: ControlPlane, deployment_id: str, build_log: BuildLog, stage: str, reason: str
) -> DeploymentStatus:
    build_log.write(stage, f"failed: {reason}")
    await _until_stored(cp.logs.flush)
    await _until_stored(finish_failed, cp, deployment_id, reason)
    await _until_stored(publish, cp)
    _tell_finished(cp, deployment_id, DeploymentStatus.FAILED, reason)
    return DeploymentStatus.FAILED


def _tell_finished(
    cp: ControlPlane, deployment_id: str, status: DeploymentStatus, reason: str | None
) -> None:
    for listener in list(cp.finish_listeners):
        try:
            listener(deployment_id, status, reason)
        except Exception:
            log.exception("finish listener failed for %s", deployment_id)


async def _until_stored(func: Callable[..., T], *args: Any) -> T:
    """Run a final write in a thread, waiting out a busy or restarting database (bounded)."""
    for delay in STORE_RETRY_DELAYS:
        try:
            return await asyncio.to_thread(func, *args)
        except StoreUnavailable as exc:
            log.warning("store unavailable, retrying in %.0f s: %s", delay, exc.message)
            await asyncio.sleep(delay)
    return await asyncio.to_thread(func, *args)


def finish_failed(cp: ControlPlane, deployment_id: str, reason: str) -> None:
    with cp.store.write() as s:
        d = s.get(Deployment, deployment_id)
        if d is None:
            return  # deleted with its project meanwhile
        if d.status != DeploymentStatus.BUILDING:
            return
        d.status, d.failure_reason, d.finished_at = DeploymentStatus.FAILED, reason, now()
        project = s.get_one(Project, d.project_id).name
    shutil.rmtree(cp.release_dir(project, deployment_id), ignore_errors=True)


def finish_successful(cp: ControlPlane, deployment_id: str, result: BuildResult) -> bool:
    """Mark successful and, if the rules say so, make it current (one transaction)."""
    with cp.store.write() as s:
        d = get_deployment(s, deployment_id)
        env = s.get_one(Environment, d.environment_id, with_for_update=True)
        command, source = resolved_start_command(d.custom_start_command, result.release)
        d.status, d.finished_at = DeploymentStatus.SUCCESSFUL, now()
        d.start_command, d.start_command_source = command, source
        d.settings = json.loads(json.dumps(dict(result.detection), default=str))
        d.release = release_to_json(result.release)
        current = (
            s.get(Deployment, env.current_deployment_id) if env.current_deployment_id else None
        )
        current_commit = current.commit_sha if current is not None else None
        decision = should_promote(
            d.trigger,
            d.promote_on_success,
            d.push_seq,
            env.promoted_push_seq,
            current_commit=current_commit,
            relation=result.ancestry.get(current_commit) if current_commit else None,
        )
        if decision.promote:
            actor = f"push by {d.pusher}" if d.trigger == TriggerKind.PUSH else d.created_by
            move_pointer(s, env, d, actor, decision.reason)
        # The last lines commit with the status: a reader who sees `successful` has every line.
        if d.trigger == TriggerKind.PUSH:
            s.add(
                BuildLogRow(
                    deployment_id=d.id,
                    stage="release",
                    timestamp=now(),
                    message=f"order: {decision.reason}",
                )
            )
        message = "deployment is live" + (" and current" if decision.promote else "")
        s.add(BuildLogRow(deployment_id=d.id, stage="release", timestamp=now(), message=message))
        return decision.promote
