"""Redeploy: a new deployment of the same source into the same environment.

The HTTP API has no redeploy call, so the dashboard composes the control plane's own use-case
(`deploys.deploy`): a push deployment is rebuilt from its commit; a manual upload from the
source kept in its release (``{release}/src``), which only successful builds keep. The new
deployment snapshots the project's settings *now* (custom start command, variables), exactly
as any new deployment does; the old one is never modified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from phemeral import deploys
from phemeral.build.archive import pack
from phemeral.errors import Conflict
from phemeral.models import DeploymentStatus, TriggerKind
from phemeral.store.schema import Environment, Project
from phemeral.store.views import get_deployment


def can_redeploy(trigger_kind: object, status: object) -> bool:
    """Push deployments can always be rebuilt; uploads only while their source is kept."""
    return trigger_kind == TriggerKind.PUSH or status == DeploymentStatus.SUCCESSFUL


def redeploy(cp: deploys.ControlPlane, deployment_id: str, actor: str) -> str:
    """Queue a new deployment built from the same source; returns its id."""
    with cp.store.read() as s:
        d = get_deployment(s, deployment_id)
        project = s.get_one(Project, d.project_id).name
        environment = s.get_one(Environment, d.environment_id).name
        kind, commit, branch, pusher = d.trigger, d.commit_sha, d.branch, d.pusher
        promote = d.promote_on_success
    if kind == TriggerKind.PUSH:
        trigger = deploys.Trigger(
            kind=TriggerKind.PUSH, actor=actor, commit=commit, branch=branch, pusher=pusher
        )
        new, _ = deploys.deploy(cp, project, environment, trigger)
        return new.id
    source = cp.release_dir(project, deployment_id) / "src"
    if not source.is_dir():
        raise Conflict(
            f"the uploaded source of {deployment_id} is no longer kept (failed builds do not "
            "keep theirs); deploy it again with `phemeral deploy`"
        )
    cp.uploads_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=cp.uploads_dir, prefix="redeploy-", suffix=".tar.gz")
    os.close(fd)
    archive = Path(name)
    try:
        pack(source, archive)
        new, _ = deploys.deploy(
            cp,
            project,
            environment,
            deploys.Trigger(kind=TriggerKind.MANUAL, actor=actor),
            archive=archive,
            promote=promote,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()  # moved into place when the deployment was created
    return new.id
