"""The control plane's use-cases, read top to bottom.

    create_project ─► create_environment ─► set_variables
    create_deployment (upload or push) ─► BuildQueue ─► run_build:
        builder(job) ─► runtime.boot_check(release) ─► runtime.register(release)
        ─► finish_successful (compare-and-set of the current pointer) | finish_failed
    promote (explicit, any successful deployment = rollback)
    reconcile_after_restart (nothing stays `building`), publish (a new RoutingSnapshot)

Every function that touches the database is sync and runs its writes in one transaction; async
callers use threads. The builder and the runtime plug in through the `Builder` and
`RuntimeControl` protocols below (phemeral.build.pipeline.build and
phemeral.runtime.supervisor.Runtime satisfy them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from phemeral.errors import (
    BuildError,
    Conflict,
    InvalidInput,
    NotFound,
    PhemeralError,
    StoreUnavailable,
)
from phemeral.models import (
    ArchiveSource,
    BuildJob,
    BuildLog,
    BuildResult,
    DeploymentRoute,
    DeploymentStatus,
    GitSource,
    InstanceState,
    ProjectOverrides,
    Release,
    RoutingSnapshot,
    StartCommandSource,
    TriggerKind,
)
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store.db import Store
from phemeral.store.logs import LogWriter
from phemeral.store.names import (
    check_branch,
    check_domain_label,
    check_environment_name,
    check_project_name,
    default_domain,
    new_deployment_id,
)
from phemeral.store.releases import release_from_json, release_to_json
from phemeral.store.schema import (
    BuildLogRow,
    Deployment,
    Domain,
    Environment,
    EnvVar,
    Project,
    Promotion,
)
from phemeral.store.variables import check_variable, runtime_env

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_APP_UID = 20000
STORE_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
MIN_FREE_BYTES = 1 << 30  # a build needs room for a venv; below this it is refused
INTERRUPTED = "interrupted by restart"
PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
PACKAGE_MANAGERS = ("uv", "poetry", "pip")


class Builder(Protocol):
    """`phemeral.build.pipeline.build`: turns a job into a release; never touches the DB."""

    def __call__(
        self, job: BuildJob, log: BuildLog, settings: Settings
    ) -> Awaitable[BuildResult]: ...


class RuntimeControl(Protocol):
    """What the control plane needs of `phemeral.runtime.supervisor.Runtime`."""

    def register(self, release: Release) -> None: ...

    async def boot_check(self, release: Release, log: BuildLog) -> None: ...

    def instances(self, deployment_id: str) -> InstanceState: ...

    async def retire(self, deployment_id: str) -> None: ...


SnapshotListener = Callable[[RoutingSnapshot], None]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ControlPlane:
    """The state the use-cases share: settings, the store, secrets, and the plugged-in parts."""

    settings: Settings
    store: Store
    box: SecretBox
    logs: LogWriter
    builder: Builder | None = None
    runtime: RuntimeControl | None = None
    listeners: list[SnapshotListener] = field(default_factory=list)
    snapshot: RoutingSnapshot | None = None
    queue: BuildQueue | None = None

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def release_dir(self, project: str, deployment_id: str) -> Path:
        return self.settings.data_dir / "apps" / project / "releases" / deployment_id


# ── projects ─────────────────────────────────────────────────────────────────────────────────


def create_project(
    cp: ControlPlane,
    name: str,
    *,
    repo_url: str | None = None,
    root_dir: str | None = None,
    start_command: str | None = None,
    python_version: str | None = None,
    package_manager: str | None = None,
    webhook_secret: str | None = None,
    branch: str = "main",
) -> Project:
    """A project with its `production` environment (branch `main`) and default domain."""
    check_project_name(name)
    fields = _checked_project_fields(
        cp,
        {
            "repo_url": repo_url,
            "root_dir": root_dir,
            "start_command": start_command,
            "python_version": python_version,
            "package_manager": package_manager,
        },
    )
    secret = webhook_secret or os.urandom(24).hex()
    for attempt in range(3):
        try:
            project = _insert_project(cp, name, secret, branch, fields)
        except IntegrityError as exc:  # a concurrent create took the name or the uid
            if attempt == 2:
                raise Conflict(f"project {name!r} could not be created: {exc.orig}") from exc
            continue
        publish(cp)
        return project
    raise AssertionError("unreachable")


def _insert_project(
    cp: ControlPlane, name: str, secret: str, branch: str, fields: dict[str, Any]
) -> Project:
    with cp.store.write() as s:
        if s.get_bind().dialect.name == "postgresql":
            # Serialise uid allocation (SQLite's BEGIN IMMEDIATE already does).
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_APP_UID})
        if s.scalar(select(Project.id).where(Project.name == name)) is not None:
            raise Conflict(f"project {name!r} already exists")
        highest = s.scalar(select(Project.uid).order_by(Project.uid.desc()).limit(1))
        project = Project(
            name=name,
            uid=max(highest or FIRST_APP_UID, FIRST_APP_UID) + 1,
            webhook_secret=cp.box.encrypt(secret),
            created_at=now(),
            **fields,
        )
        s.add(project)
        s.flush()
        _add_environment(s, project, "production", [check_branch(branch)], [])
    return project


def _checked_project_fields(cp: ControlPlane, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None:
            if key == "python_version" and not PYTHON_VERSION.match(value):
                raise InvalidInput(f"python version {value!r} is not of the form 3.X")
            if key == "package_manager" and value not in PACKAGE_MANAGERS:
                raise InvalidInput(f"package manager must be one of {', '.join(PACKAGE_MANAGERS)}")
            if key == "root_dir" and (value.startswith("/") or ".." in Path(value).parts):
                raise InvalidInput(f"root dir {value!r} must be a relative path inside the repo")
            if key == "start_command" and ("\x00" in value or "\n" in value):
                raise InvalidInput("the start command must be one line")
            if key == "repo_url":
                _check_repo_url(cp.settings, value)
        out[key] = value
    return out


def _check_repo_url(settings: Settings, url: str) -> None:
    local = url.startswith(("/", "file:", ".", "~"))
    if local and not settings.allow_local_repos:
        raise InvalidInput(
            f"repository {url!r} is a local path; the server accepts those only when it runs "
            "with --allow-local-repos"
        )
    if not local and not re.match(r"^(https://|http://|ssh://|git@|git://)", url):
        raise InvalidInput(f"repository {url!r} is not an https, ssh or git URL")


def update_project(cp: ControlPlane, name: str, changes: Mapping[str, Any]) -> Project:
    """Change settings; a new start command (or clearing it) applies to new deployments only."""
    secrets_given = {k: changes[k] for k in ("webhook_secret", "repo_token") if k in changes}
    plain = {k: v for k, v in changes.items() if k not in secrets_given}
    unknown = set(plain) - {
        "repo_url",
        "root_dir",
        "start_command",
        "python_version",
        "package_manager",
    }
    if unknown:
        raise InvalidInput(f"unknown project setting(s): {', '.join(sorted(unknown))}")
    fields = _checked_project_fields(cp, plain)
    with cp.store.write() as s:
        project = _project(s, name, lock=True)
        for key, value in fields.items():
            setattr(project, key, value)
        for key, value in secrets_given.items():
            setattr(project, key, cp.box.encrypt(value) if value else None)
    return project


def delete_project(cp: ControlPlane, name: str) -> list[str]:
    """Remove a project and everything in it; refused while one of its builds runs."""
    with cp.store.write() as s:
        project = _project(s, name, lock=True)
        ids = list(s.scalars(select(Deployment.id).where(Deployment.project_id == project.id)))
        building = s.scalar(
            select(Deployment.id).where(
                Deployment.project_id == project.id,
                Deployment.status == DeploymentStatus.BUILDING,
            )
        )
        if building:
            raise Conflict(f"deployment {building} of {name} is building; delete it afterwards")
        s.execute(delete(Project).where(Project.id == project.id))
    publish(cp)
    shutil.rmtree(cp.settings.data_dir / "apps" / name, ignore_errors=True)
    return ids


def webhook_secret(cp: ControlPlane, name: str) -> str:
    with cp.store.read() as s:
        project = _project(s, name)
        return cp.box.decrypt(project.webhook_secret) if project.webhook_secret else ""


# ── environments and variables ──────────────────────────────────────────────────────────────


def create_environment(
    cp: ControlPlane, project: str, name: str, branches: list[str], domains: list[str]
) -> Environment:
    check_environment_name(name)
    branches = [check_branch(b) for b in branches]
    domains = [check_domain_label(d) for d in domains]
    with cp.store.write() as s:
        proj = _project(s, project, lock=True)
        if _environment_or_none(s, proj, name) is not None:
            raise Conflict(f"environment {name!r} already exists in {project}")
        env = _add_environment(s, proj, name, branches, domains)
    publish(cp)
    return env


def update_environment(
    cp: ControlPlane,
    project: str,
    name: str,
    *,
    branches: list[str] | None = None,
    domains: list[str] | None = None,
) -> Environment:
    """Replace the mapped branches and/or the custom domains (the default domain stays)."""
    branches = None if branches is None else [check_branch(b) for b in branches]
    domains = None if domains is None else [check_domain_label(d) for d in domains]
    with cp.store.write() as s:
        proj = _project(s, project, lock=True)
        env = _environment(s, project, name, lock=True)
        if branches is not None:
            others = [
                e
                for e in s.scalars(select(Environment).where(Environment.project_id == proj.id))
                if e.id != env.id
            ]
            for other in others:
                for branch in branches:
                    if branch in other.branches:
                        raise Conflict(
                            f"branch {branch!r} is already mapped to environment {other.name!r}"
                        )
            env.branches = branches
        if domains is not None:
            s.execute(delete(Domain).where(Domain.environment_id == env.id, ~Domain.is_default))
            s.flush()
            for label in domains:
                _claim_domain(s, env, label, False)
    publish(cp)
    return env


def _add_environment(
    s: Session, project: Project, name: str, branches: list[str], domains: list[str]
) -> Environment:
    taken = _branch_owner(s, project, branches)
    if taken:
        raise Conflict(f"branch {taken[0]!r} is already mapped to environment {taken[1]!r}")
    env = Environment(project_id=project.id, name=name, branches=branches, created_at=now())
    s.add(env)
    s.flush()
    labels = [(default_domain(project.name, name), True)] + [(d, False) for d in domains]
    for label, is_default in labels:
        _claim_domain(s, env, label, is_default)
    return env


def _branch_owner(s: Session, project: Project, branches: list[str]) -> tuple[str, str] | None:
    for env in s.scalars(select(Environment).where(Environment.project_id == project.id)):
        for branch in branches:
            if branch in env.branches:
                return branch, env.name
    return None


def _claim_domain(s: Session, env: Environment, label: str, is_default: bool) -> None:
    if s.get(Domain, label) is not None:
        raise Conflict(f"domain {label!r} is already in use")
    if s.get(Deployment, label) is not None:
        raise Conflict(f"domain {label!r} is the id of a deployment")
    s.add(Domain(label=label, environment_id=env.id, is_default=is_default))


def set_variables(
    cp: ControlPlane, project: str, environment: str, values: Mapping[str, str], *, secret: bool
) -> list[str]:
    """Add or replace variables; they reach deployments created from now on."""
    for key, value in values.items():
        check_variable(key, value)
    with cp.store.write() as s:
        env = _environment(s, project, environment)
        existing = {
            v.key: v for v in s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id))
        }
        for key, value in values.items():
            row = existing.get(key) or EnvVar(environment_id=env.id, key=key)
            row.value = cp.box.encrypt(value)
            row.secret = secret
            row.updated_at = now()
            s.add(row)
    return sorted(values)


def unset_variables(cp: ControlPlane, project: str, environment: str, keys: list[str]) -> list[str]:
    with cp.store.write() as s:
        env = _environment(s, project, environment)
        rows = list(
            s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id, EnvVar.key.in_(keys)))
        )
        missing = set(keys) - {r.key for r in rows}
        if missing:
            raise NotFound(f"no variable {', '.join(sorted(missing))} in {project}/{environment}")
        for row in rows:
            s.delete(row)
    return sorted(keys)


# ── deployments ─────────────────────────────────────────────────────────────────────────────


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
        proj = _project(s, project)
        env = _environment(s, project, environment, lock=True)
        if trigger.kind == TriggerKind.PUSH and not proj.repo_url:
            raise InvalidInput(f"project {project} has no repository to fetch commits from")
        push_seq = None
        if trigger.kind == TriggerKind.PUSH:
            push_seq = trigger.push_seq if trigger.push_seq is not None else env.last_push_seq + 1
            env.last_push_seq = max(env.last_push_seq, push_seq)
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
            push_seq=push_seq,
            promote_on_success=promote if trigger.kind == TriggerKind.MANUAL else True,
            created_by=trigger.actor,
            custom_start_command=proj.start_command,
            # Snapshot of the command now: custom if one is saved, else filled in by the build
            # with the autodetected default. Later changes to the project never reach it.
            start_command=proj.start_command,
            start_command_source=StartCommandSource.CUSTOM if proj.start_command else None,
            env_snapshot=cp.box.encrypt(json.dumps(_variables(cp, s, env))),
            created_at=now(),
        )
        s.add(deployment)
    if archive is not None:
        cp.uploads_dir.mkdir(parents=True, exist_ok=True)
        archive.replace(_upload_path(cp, deployment.id))
    cp.logs.build_log(deployment.id).write("queue", "queued: waiting for a build slot")
    publish(cp)
    return deployment, True


def _unused_deployment_id(s: Session) -> str:
    while True:
        candidate = new_deployment_id()
        if s.get(Deployment, candidate) is None and s.get(Domain, candidate) is None:
            return candidate


def _upload_path(cp: ControlPlane, deployment_id: str) -> Path:
    return cp.uploads_dir / f"{deployment_id}.tar.gz"


def _variables(cp: ControlPlane, s: Session, env: Environment) -> dict[str, str]:
    rows = s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id).order_by(EnvVar.key))
    return {row.key: cp.box.decrypt(row.value) for row in rows}


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
        cp.queue.submit(deployment.id)
    return deployment, created


def prepare_job(cp: ControlPlane, deployment_id: str) -> BuildJob:
    """Everything the builder needs, read once from the database."""
    with cp.store.write() as s:
        d = _deployment(s, deployment_id)
        project = s.get_one(Project, d.project_id)
        env = s.get_one(Environment, d.environment_id)
        d.started_at = now()
        source: ArchiveSource | GitSource
        if d.trigger == TriggerKind.PUSH:
            assert project.repo_url and d.commit_sha
            token = cp.box.decrypt(project.repo_token) if project.repo_token else None
            source = GitSource(url=project.repo_url, commit=d.commit_sha, token=token)
        else:
            source = ArchiveSource(path=_upload_path(cp, d.id))
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
            env=_runtime_env(cp, s, d, env),
            release_dir=cp.release_dir(project.name, d.id),
            uid=project.uid if os.geteuid() == 0 else None,
        )


def enough_disk(free_bytes: int) -> bool:
    return free_bytes >= MIN_FREE_BYTES


def _runtime_env(cp: ControlPlane, s: Session, d: Deployment, env: Environment) -> dict[str, str]:
    snapshot: dict[str, str] = json.loads(cp.box.decrypt(d.env_snapshot))
    domains = s.scalars(select(Domain.label).where(Domain.environment_id == env.id))
    return runtime_env(
        snapshot,
        deployment_id=d.id,
        environment=env.name,
        deployment_url=cp.settings.url_for_label(d.id),
        environment_urls=[cp.settings.url_for_label(label) for label in domains],
    )


def resolved_start_command(custom: str | None, release: Release) -> tuple[str, StartCommandSource]:
    """The command snapshot of a deployment: its saved custom command, else the autodetected one.

    The builder resolves the command from ``job.custom_start_command`` (the snapshot taken at
    creation); a release that disagrees with that snapshot is refused.
    """
    if custom:
        if release.start_command != custom:
            raise BuildError(
                "the build did not use the project's custom start command", stage="release"
            )
        return custom, StartCommandSource.CUSTOM
    if release.start_command_source != StartCommandSource.AUTODETECTED:
        raise BuildError("the build reported a custom command none was saved", stage="release")
    return release.start_command, StartCommandSource.AUTODETECTED


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
        result = await asyncio.wait_for(
            cp.builder(job, build_log, cp.settings), timeout=cp.settings.build_timeout
        )
        command, source = resolved_start_command(job.custom_start_command, result.release)
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
        reason = f"the build ran past its {cp.settings.build_timeout:g} s limit"
        return await _fail(cp, deployment_id, build_log, "build", reason)
    except Exception as exc:
        log.exception("build of %s crashed", deployment_id)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return await _fail(cp, deployment_id, build_log, "build", reason)
    finally:
        with contextlib.suppress(OSError):
            _upload_path(cp, deployment_id).unlink(missing_ok=True)
    build_log.write("release", f"start command ({source}): {command}")
    await _until_stored(cp.logs.flush)
    await _until_stored(finish_successful, cp, deployment_id, result)
    await _until_stored(publish, cp)
    return DeploymentStatus.SUCCESSFUL


async def _fail(
    cp: ControlPlane, deployment_id: str, build_log: BuildLog, stage: str, reason: str
) -> DeploymentStatus:
    build_log.write(stage, f"failed: {reason}")
    await _until_stored(cp.logs.flush)
    await _until_stored(finish_failed, cp, deployment_id, reason)
    await _until_stored(publish, cp)
    return DeploymentStatus.FAILED


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


def should_promote(
    trigger: str, promote_on_success: bool, push_seq: int | None, promoted_push_seq: int
) -> bool:
    """Manual: as asked. Push: only if newer than the push that made the current deployment."""
    if trigger == TriggerKind.PUSH:
        return push_seq is not None and push_seq > promoted_push_seq
    return promote_on_success


def finish_successful(cp: ControlPlane, deployment_id: str, result: BuildResult) -> bool:
    """Mark successful and, if the rules say so, make it current (one transaction)."""
    with cp.store.write() as s:
        d = _deployment(s, deployment_id)
        env = s.get_one(Environment, d.environment_id, with_for_update=True)
        command, source = resolved_start_command(d.custom_start_command, result.release)
        d.status, d.finished_at = DeploymentStatus.SUCCESSFUL, now()
        d.start_command, d.start_command_source = command, source
        d.settings = json.loads(json.dumps(dict(result.detection), default=str))
        d.release = release_to_json(result.release)
        promoted = should_promote(
            d.trigger, d.promote_on_success, d.push_seq, env.promoted_push_seq
        )
        if promoted:
            actor = f"push by {d.pusher}" if d.trigger == TriggerKind.PUSH else d.created_by
            why = "push deployment succeeded" if d.trigger == TriggerKind.PUSH else "manual deploy"
            _move_pointer(s, env, d, actor, why)
        # The last line commits with the status: a reader who sees `successful` has every line.
        message = "deployment is live" + (" and current" if promoted else "")
        s.add(BuildLogRow(deployment_id=d.id, stage="release", timestamp=now(), message=message))
        return promoted


def promote(cp: ControlPlane, deployment_id: str, actor: str, reason: str | None) -> Promotion:
    """Make any successful deployment current on its environment (this is also rollback)."""
    with cp.store.write() as s:
        d = _deployment(s, deployment_id)
        env = s.get_one(Environment, d.environment_id, with_for_update=True)
        if d.status != DeploymentStatus.SUCCESSFUL:
            raise Conflict(f"deployment {d.id} is {d.status}; only successful ones can be promoted")
        if env.current_deployment_id == d.id:
            raise Conflict(f"deployment {d.id} is already current on {env.name}")
        promotion = _move_pointer(s, env, d, actor, reason or "promoted by hand")
    publish(cp)
    return promotion


def _move_pointer(
    s: Session, env: Environment, d: Deployment, actor: str, reason: str
) -> Promotion:
    promotion = Promotion(
        environment_id=env.id,
        from_deployment_id=env.current_deployment_id,
        to_deployment_id=d.id,
        actor=actor,
        reason=reason,
        created_at=now(),
    )
    s.add(promotion)
    env.current_deployment_id = d.id
    if d.push_seq is not None:
        env.promoted_push_seq = max(env.promoted_push_seq, d.push_seq)
    return promotion


# ── restart, routing, runtime ───────────────────────────────────────────────────────────────


def reconcile_after_restart(cp: ControlPlane) -> list[str]:
    """Deployments left `building` by a previous process become `failed` (never stay building)."""
    with cp.store.write() as s:
        rows = list(
            s.execute(
                select(Deployment.id, Project.name)
                .join(Project, Project.id == Deployment.project_id)
                .where(Deployment.status == DeploymentStatus.BUILDING)
            )
        )
        s.execute(
            update(Deployment)
            .where(Deployment.status == DeploymentStatus.BUILDING)
            .values(status=DeploymentStatus.FAILED, failure_reason=INTERRUPTED, finished_at=now())
        )
    for deployment_id, project in rows:
        cp.logs.build_log(deployment_id).write("build", f"failed: {INTERRUPTED}")
        shutil.rmtree(cp.release_dir(project, deployment_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            _upload_path(cp, deployment_id).unlink(missing_ok=True)
    cp.logs.flush()
    return [deployment_id for deployment_id, _ in rows]


def releases(cp: ControlPlane) -> list[Release]:
    """Every successful deployment's release, to hand to the runtime on start."""
    with cp.store.read() as s:
        rows = s.scalars(
            select(Deployment).where(
                Deployment.status == DeploymentStatus.SUCCESSFUL, Deployment.release.is_not(None)
            )
        )
        out = []
        for d in rows:
            assert d.release is not None
            env = s.get_one(Environment, d.environment_id)
            out.append(release_from_json(d.release, _runtime_env(cp, s, d, env)))
        return out


def routing_snapshot(store: Store, base_domain: str) -> RoutingSnapshot:
    with store.read() as s:
        deployments = {
            row.id: DeploymentRoute(
                status=DeploymentStatus(row.status), project=row.project, environment=row.env
            )
            for row in s.execute(
                select(
                    Deployment.id,
                    Deployment.status,
                    Project.name.label("project"),
                    Environment.name.label("env"),
                )
                .join(Project, Project.id == Deployment.project_id)
                .join(Environment, Environment.id == Deployment.environment_id)
            )
        }
        domains: dict[str, str | None] = {}
        query = select(Domain.label, Environment.current_deployment_id).join(
            Environment, Environment.id == Domain.environment_id
        )
        for label, current in s.execute(query):
            domains[label] = current
    return RoutingSnapshot(base_domain=base_domain, deployments=deployments, domains=domains)


def publish(cp: ControlPlane) -> RoutingSnapshot:
    """Compute the routing snapshot and hand it to every listener (the router)."""
    snapshot = routing_snapshot(cp.store, cp.settings.base_domain)
    cp.snapshot = snapshot
    for listener in list(cp.listeners):
        try:
            listener(snapshot)
        except Exception:
            log.exception("routing snapshot listener failed")
    return snapshot


def instances(cp: ControlPlane, deployment_id: str) -> InstanceState:
    if cp.runtime is None:
        return InstanceState(instances=0, state="stopped")
    return cp.runtime.instances(deployment_id)


# ── the build queue ─────────────────────────────────────────────────────────────────────────


class BuildQueue:
    """Runs at most `settings.build_concurrency` builds at once; the rest wait (`queued`)."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp
        self._slots = asyncio.Semaphore(cp.settings.build_concurrency)
        self._tasks: set[asyncio.Task[DeploymentStatus]] = set()
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._pending = 0  # submitted from another thread, task not created yet

    def submit(self, deployment_id: str) -> None:
        """Thread-safe: may be called from a request handler's worker thread."""
        with self._lock:
            self._pending += 1
        self._loop.call_soon_threadsafe(self._start, deployment_id)

    def _start(self, deployment_id: str) -> None:
        with self._lock:
            self._pending -= 1
        task = self._loop.create_task(self._run(deployment_id), name=f"build-{deployment_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, deployment_id: str) -> DeploymentStatus:
        async with self._slots:
            return await run_build(self._cp, deployment_id)

    async def wait_idle(self) -> None:
        """Until every submitted build has finished (tests, orderly shutdown)."""
        while self._tasks or self._pending:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


# ── lookups ─────────────────────────────────────────────────────────────────────────────────


def _project(s: Session, name: str, *, lock: bool = False) -> Project:
    query = select(Project).where(Project.name == name)
    project = s.scalar(query.with_for_update() if lock else query)
    if project is None:
        raise NotFound(f"no project named {name!r}")
    return project


def _environment_or_none(s: Session, project: Project, name: str) -> Environment | None:
    return s.scalar(
        select(Environment).where(Environment.project_id == project.id, Environment.name == name)
    )


def _environment(s: Session, project: str, name: str, *, lock: bool = False) -> Environment:
    proj = _project(s, project)
    query = select(Environment).where(Environment.project_id == proj.id, Environment.name == name)
    env = s.scalar(query.with_for_update() if lock else query)
    if env is None:
        raise NotFound(f"project {project} has no environment named {name!r}")
    return env


def _deployment(s: Session, deployment_id: str) -> Deployment:
    d = s.get(Deployment, deployment_id) if len(deployment_id) <= 12 else None
    if d is None:
        raise NotFound(f"no deployment with id {deployment_id!r}")
    return d
