"""Release retention: keep what can still be served or rolled back to, collect the rest.

A project keeps every environment's current deployment, every pinned one, and its newest
``settings.keep_releases`` successful ones; the other successful deployments are *collected*:
marked ``collected_at`` (no longer routed, no longer promotable), dropped by the runtime, and
their release folders (source + venv) removed. The row stays, with its logs, as history.
`to_collect` is the pure rule; `collect_releases` runs after every successful build.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from phemeral.deploys.plane import ControlPlane, now
from phemeral.deploys.routing import publish
from phemeral.errors import Conflict
from phemeral.models import DeploymentStatus
from phemeral.store.schema import Deployment, Environment
from phemeral.store.views import get_deployment, get_project

log = logging.getLogger("phemeral.deploys")


@dataclass(frozen=True)
class Candidate:
    deployment_id: str
    created_at: datetime
    pinned: bool
    current: bool  # the current deployment of one of the project's environments


def to_collect(candidates: Sequence[Candidate], keep: int) -> list[str]:
    """The successful, uncollected deployments of one project that go (pure)."""
    newest_first = sorted(candidates, key=lambda c: (c.created_at, c.deployment_id), reverse=True)
    kept_recent = {c.deployment_id for c in newest_first[:keep]}
    return [
        c.deployment_id
        for c in newest_first
        if not (c.current or c.pinned or c.deployment_id in kept_recent)
    ]


def mark_collected(cp: ControlPlane, project: str) -> list[str]:
    """Decide and mark, in one transaction (the current pointers read under lock)."""
    with cp.store.write() as s:
        proj = get_project(s, project)
        envs = s.scalars(
            select(Environment).where(Environment.project_id == proj.id).with_for_update()
        )
        current = {e.current_deployment_id for e in envs if e.current_deployment_id}
        rows = list(
            s.scalars(
                select(Deployment).where(
                    Deployment.project_id == proj.id,
                    Deployment.status == DeploymentStatus.SUCCESSFUL,
                    Deployment.collected_at.is_(None),
                )
            )
        )
        candidates = [Candidate(d.id, d.created_at, d.pinned, d.id in current) for d in rows]
        chosen = set(to_collect(candidates, cp.settings.keep_releases))
        stamp = now()
        for d in rows:
            if d.id in chosen:
                d.collected_at = stamp
        return sorted(chosen)


async def collect_releases(cp: ControlPlane, project: str) -> list[str]:
    """Collect what the rule says for ``project``; returns the collected deployment ids."""
    collected = await asyncio.to_thread(mark_collected, cp, project)
    if not collected:
        return []
    await asyncio.to_thread(publish, cp)  # no longer routed
    for deployment_id in collected:
        if cp.runtime is not None:
            await cp.runtime.retire(deployment_id)
        path = cp.release_dir(project, deployment_id)
        await asyncio.to_thread(shutil.rmtree, path, True)
    log.info("collected %d release(s) of %s: %s", len(collected), project, ", ".join(collected))
    return collected


def set_pinned(cp: ControlPlane, deployment_id: str, pinned: bool) -> Deployment:
    """Pin (kept whatever retention says) or unpin a deployment."""
    with cp.store.write() as s:
        d = get_deployment(s, deployment_id)
        if pinned and d.collected_at is not None:
            raise Conflict(f"deployment {d.id}'s release was already collected; redeploy it")
        d.pinned = pinned
        return d
