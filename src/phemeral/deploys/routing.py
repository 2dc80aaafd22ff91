"""Routing: the `RoutingSnapshot` computed from the database and published to the listeners (the
router) after every change, and what the runtime says of a deployment's instances."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import or_, select

from phemeral.deploys.plane import ControlPlane
from phemeral.models import (
    DeploymentRoute,
    DeploymentStatus,
    HostPolicy,
    InstanceState,
    RoutingSnapshot,
    TlsCertificate,
)
from phemeral.store.db import Store
from phemeral.store.schema import CustomDomain, Deployment, Domain, Environment, Preview, Project
from phemeral.tls.pem import covers

log = logging.getLogger("phemeral.deploys")


def routing_snapshot(
    store: Store,
    base_domain: str,
    *,
    https: bool = False,
    wildcard: TlsCertificate | None = None,
    at: datetime | None = None,
) -> RoutingSnapshot:
    """Every routable name; with ``https`` (an HTTPS listener exists) also each environment
    host's policy: 308 to HTTPS once the host has a valid certificate (unless the environment
    turned it off), HSTS as the environment says."""
    at = at or datetime.now(UTC)
    wildcard_names = () if wildcard is None or at >= wildcard.not_after else wildcard.names
    policies: dict[str, HostPolicy] = {}
    custom: dict[str, str | None] = {}
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
                .where(Deployment.collected_at.is_(None))  # their releases are gone
            )
        }
        domains: dict[str, str | None] = {}
        query = select(
            Domain.label,
            Environment.current_deployment_id,
            Environment.https_redirect,
            Environment.hsts_max_age,
        ).join(Environment, Environment.id == Domain.environment_id)
        for label, current, redirect, hsts in s.execute(query):
            domains[label] = current
            host = f"{label}.{base_domain}"
            if https:
                certified = covers(wildcard_names, host)
                policies[host] = HostPolicy(redirect and certified, hsts)
        custom_query = select(
            CustomDomain.name,
            CustomDomain.cert_not_after,
            Environment.current_deployment_id,
            Environment.https_redirect,
            Environment.hsts_max_age,
        ).join(Environment, Environment.id == CustomDomain.environment_id)
        for name, not_after, current, redirect, hsts in s.execute(custom_query):
            custom[name] = current
            if https:
                certified = not_after is not None and at < not_after
                policies[name] = HostPolicy(redirect and certified, hsts)
    return RoutingSnapshot(
        base_domain=base_domain,
        deployments=deployments,
        domains=domains,
        custom_domains=custom,
        policies=policies,
    )


def publish(cp: ControlPlane) -> RoutingSnapshot:
    """Compute the routing snapshot and hand it to every listener (the router)."""
    snapshot = routing_snapshot(
        cp.store,
        cp.settings.base_domain,
        https=cp.settings.https_port is not None,
        wildcard=cp.wildcard,
    )
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
