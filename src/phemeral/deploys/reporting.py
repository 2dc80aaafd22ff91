"""Telling GitHub: a commit status per deployment (pending, then success or failure) and, for a
preview, one pull-request comment edited in place.

`GitHubReporting.watch` is called when a delivery creates a deployment: it sends *pending* at
once and remembers what to say; the build's finish listener (`ControlPlane.finish_listeners`)
sends the final state. Nothing polls. The token is asked of the project's `TokenProvider`
(`phemeral.deploys.github_auth`) at each report, so a long build's final status carries a
fresh installation token. Reports are best effort: a failure is written, with GitHub's own
words, to the deployment's build log (stage ``github``) and the platform log; it is never
raised and never changes the deployment. Tokens never reach a log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from phemeral.deploys.github_auth import github_auth
from phemeral.deploys.plane import ControlPlane
from phemeral.deploys.restart import INTERRUPTED
from phemeral.github.comments import CommentWriter, PreviewComment, comment_body
from phemeral.github.repository import github_full_name
from phemeral.github.statuses import StatusReporter, describe, state_for
from phemeral.github.tokens import TokenProvider
from phemeral.models import DeploymentStatus, TriggerKind
from phemeral.store.names import default_domain
from phemeral.store.schema import Deployment, Environment, Preview, Project

log = logging.getLogger("phemeral.deploys")


@dataclass(frozen=True)
class Watch:
    deployment_id: str
    project: str
    environment: str
    full_name: str
    sha: str
    pull_request: int | None = None
    fork_without_secrets: bool = False


class GitHubReporting:
    """One per control plane (`reporting_for`: ``cp.github_reporting``)."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp
        self._statuses = StatusReporter(cp.settings.github_api_url)
        self._comments = CommentWriter(cp.settings.github_api_url)
        self._watched: dict[str, Watch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._comment_locks: dict[tuple[str, int], asyncio.Lock] = {}
        cp.finish_listeners.append(self._finished)

    def watch(self, watch: Watch) -> None:
        """Report *pending* now and the final state when the build finishes (on the loop)."""
        self._watched[watch.deployment_id] = watch
        self._spawn(self._report(watch, DeploymentStatus.BUILDING, None))

    def report(self, watch: Watch, status: DeploymentStatus, reason: str | None) -> None:
        """Report a final state now, for a build no listener will announce (on the loop)."""
        self._spawn(self._report(watch, status, reason))

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _finished(self, deployment_id: str, status: DeploymentStatus, reason: str | None) -> None:
        watch = self._watched.pop(deployment_id, None)
        if watch is not None:
            self._spawn(self._report(watch, status, reason))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="github-report")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, w: Watch, status: DeploymentStatus, reason: str | None) -> None:
        try:
            auth = await asyncio.to_thread(github_auth, self._cp, w.project, full_name=w.full_name)
            if auth is None:
                return  # its credentials were removed meanwhile
            description = describe(status, w.deployment_id, w.environment, reason)
            if w.fork_without_secrets and status is DeploymentStatus.BUILDING:
                description = f"Fork: built without secrets until approved. {description}"
            state = state_for(status)
            refused = await self._statuses.report(
                w.full_name,
                w.sha,
                state,
                auth=auth,
                target_url=self._cp.settings.url_for_label(w.deployment_id),
                description=description,
            )
            if refused is not None:
                self._tell(w, f"commit status {state.value} not reported: {refused}")
            if w.pull_request is not None:
                await self._comment(w, status, reason, auth)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("GitHub report for deployment %s failed", w.deployment_id)

    def _tell(self, w: Watch, line: str) -> None:
        """A report GitHub did not take, in the deployment's own build log."""
        self._cp.logs.build_log(w.deployment_id).write("github", line)

    async def _comment(
        self, w: Watch, status: DeploymentStatus, reason: str | None, auth: TokenProvider
    ) -> None:
        assert w.pull_request is not None
        lock = self._comment_locks.setdefault((w.project, w.pull_request), asyncio.Lock())
        async with lock:  # one comment per preview, even when two builds finish together
            comment_id, seconds = await asyncio.to_thread(self._comment_state, w)
            body = comment_body(
                PreviewComment(
                    number=w.pull_request,
                    environment=w.environment,
                    url=self._cp.settings.url_for_label(default_domain(w.project, w.environment)),
                    deployment_url=self._cp.settings.url_for_label(w.deployment_id),
                    commit=w.sha,
                    status=status,
                    reason=reason,
                    build_seconds=seconds,
                    fork_without_secrets=w.fork_without_secrets,
                    approve_hint=f"phemeral previews approve {w.project} {w.pull_request}",
                )
            )
            new_id, refused = await self._comments.upsert(
                w.full_name, w.pull_request, comment_id, body, auth=auth
            )
            if refused is not None:
                self._tell(w, f"pull request comment not written: {refused}")
            if new_id is not None and new_id != comment_id:
                await asyncio.to_thread(self._save_comment_id, w, new_id)

    def _comment_state(self, w: Watch) -> tuple[int | None, float | None]:
        with self._cp.store.read() as s:
            preview = _preview_of(s, w)
            d = s.get(Deployment, w.deployment_id)
            seconds = None
            if d is not None and d.started_at is not None and d.finished_at is not None:
                seconds = (d.finished_at - d.started_at).total_seconds()
            return (preview.comment_id if preview is not None else None), seconds

    def _save_comment_id(self, w: Watch, comment_id: int) -> None:
        with self._cp.store.write() as s:
            preview = _preview_of(s, w)
            if preview is not None:
                preview.comment_id = comment_id


def reporting_for(cp: ControlPlane) -> GitHubReporting:
    """The control plane's one `GitHubReporting` (created on first use)."""
    if cp.github_reporting is None:
        cp.github_reporting = GitHubReporting(cp)
    return cp.github_reporting


def interrupted_watches(cp: ControlPlane, deployment_ids: Sequence[str]) -> list[Watch]:
    """What to tell GitHub about pushes whose builds a restart interrupted.

    Their watches were in the previous process's memory only; without this their commit
    statuses (and preview comments) would stay *pending* for good.
    """
    if not deployment_ids:
        return []
    watches = []
    with cp.store.read() as s:
        rows = s.execute(
            select(Deployment, Project.name, Project.repo_url, Environment.name, Preview)
            .join(Project, Project.id == Deployment.project_id)
            .join(Environment, Environment.id == Deployment.environment_id)
            .outerjoin(Preview, Preview.environment_id == Deployment.environment_id)
            .where(Deployment.id.in_(deployment_ids), Deployment.trigger == TriggerKind.PUSH)
        )
        for d, project, repo_url, environment, preview in rows:
            full_name = d.github_repo or github_full_name(repo_url or "")
            if full_name is None or d.commit_sha is None:
                continue
            watches.append(
                Watch(
                    deployment_id=d.id,
                    project=project,
                    environment=environment,
                    full_name=full_name,
                    sha=d.commit_sha,
                    pull_request=preview.number if preview is not None else None,
                    fork_without_secrets=preview is not None
                    and preview.fork
                    and preview.approved_by is None,
                )
            )
    return watches


async def report_interrupted(cp: ControlPlane) -> None:
    """Send the final *failure* of every push build the last run left unfinished (background)."""
    watches = await asyncio.to_thread(interrupted_watches, cp, cp.interrupted)
    reporting = reporting_for(cp)
    for watch in watches:
        reporting.report(watch, DeploymentStatus.FAILED, INTERRUPTED)


def _preview_of(s: Session, w: Watch) -> Preview | None:
    """The preview row of the watched deployment's environment (None for a push)."""
    return s.scalar(
        select(Preview)
        .join(Project, Project.id == Preview.project_id)
        .join(Environment, Environment.id == Preview.environment_id)
        .where(Project.name == w.project, Environment.name == w.environment)
    )
