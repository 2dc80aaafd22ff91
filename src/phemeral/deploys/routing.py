"""Routing: the `RoutingSnapshot` computed from the database and published to the listeners (the
router) after every change, and what the runtime says of a deployment's instances."""

from __future__ import annotations

import logging

from sqlalchemy import or_, select

from phemeral.deploys.plane import ControlPlane
from phemeral.models import DeploymentRoute, DeploymentStatus, InstanceState, RoutingSnapshot
from phemeral.store.db import Store
from phemeral.store.schema import Deployment, Domain, Environment, Preview, Project

log = logging.getLogger("phemeral.deploys")


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
                # A closed or suspended preview's deployments are not routed (nor woken).
                .outerjoin(Preview, Preview.environment_id == Environment.id)
                .where(or_(Preview.state.is_(None), Preview.state == "open"))
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
