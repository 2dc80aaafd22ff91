"""After a restart: nothing stays `building`, and every successful release goes back to the
runtime."""

from __future__ import annotations

import contextlib
import shutil

from sqlalchemy import select, update

from phemeral.deploys.environments import deployment_runtime_env
from phemeral.deploys.plane import ControlPlane, now
from phemeral.models import DeploymentStatus, Release
from phemeral.store.releases import release_from_json
from phemeral.store.schema import Deployment, Environment, Project

INTERRUPTED = "interrupted by restart"


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
            cp.upload_path(deployment_id).unlink(missing_ok=True)
    cp.logs.flush()
    return [deployment_id for deployment_id, _ in rows]


def releases(cp: ControlPlane) -> list[Release]:
    """Every successful deployment's release, to hand to the runtime on start."""
    with cp.store.read() as s:
        rows = s.scalars(
            select(Deployment).where(
                Deployment.status == DeploymentStatus.SUCCESSFUL,
                Deployment.release.is_not(None),
                Deployment.collected_at.is_(None),
            )
        )
        out = []
        for d in rows:
            assert d.release is not None
            env = s.get_one(Environment, d.environment_id)
            out.append(release_from_json(d.release, deployment_runtime_env(cp, s, d, env)))
        return out
