"""Routing: the `RoutingSnapshot` computed from the database and published to the listeners (the
router) after every change, and what the runtime says of a deployment's instances.

`publish` computes and hands out a snapshot under the control plane's publish lock, so listeners
receive snapshots in the order they were read from the database: a later snapshot never loses
to an older one computed at the same time in another thread. A change whose route may show a
moment later (a new `building` deployment: its ``{id}`` host answers "still building" instead
of 404) asks for `publish_soon` instead: the `Publisher` publishes once after it, on the event
loop, for every request that came meanwhile (a burst of pushes is one snapshot), so a webhook
answers as soon as the deployment row is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    with store.read() as session:
        s = session.connection()  # Core rows: no ORM result processing per row
        rows = s.execute(
            select(Deployment.id, Deployment.status, Project.name, Environment.name)
            .join(Project, Project.id == Deployment.project_id)
            .join(Environment, Environment.id == Deployment.environment_id)
            # A closed or suspended preview's deployments are not routed (nor woken).
            .outerjoin(Preview, Preview.environment_id == Environment.id)
            .where(or_(Preview.state.is_(None), Preview.state == "open"))
            .where(Deployment.collected_at.is_(None))  # their releases are gone
        )
        routes: dict[tuple[str, str, str], DeploymentRoute] = {}  # one per status and place
        deployments = {}
        for deployment_id, status, project, environment in rows:
            key = (status, project, environment)
            route = routes.get(key)
            if route is None:
                route = routes[key] = DeploymentRoute(
                    DeploymentStatus(status), project, environment
                )
            deployments[deployment_id] = route
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
    """Compute the routing snapshot and hand it to every listener (the router), in order."""
    with cp.publish_lock:
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


def publish_soon(cp: ControlPlane) -> None:
    """Publish after the caller's committed change, off its path (any thread); at once when
    the control plane has no `Publisher` (tests, one-off tools)."""
    if cp.publisher is None:
        publish(cp)
    else:
        cp.publisher.request()


PUBLISH_COALESCE = 0.05  # seconds requests wait to share one snapshot
PUBLISH_RETRY = 0.5  # after a failed publish (the database busy or restarting)


class Publisher:
    """One publish for every burst of `request` calls, in a thread, off the requesters' path.

    A request that arrives while a publish runs gets another one after it: every change stored
    before `request` is in a snapshot the listeners receive. A publish that fails (the store
    cannot answer) is tried again until one succeeds. `flush` waits for the requests so far.
    """

    def __init__(self, cp: ControlPlane, *, coalesce: float = PUBLISH_COALESCE) -> None:
        self.cp = cp
        self.coalesce = coalesce
        self._loop = asyncio.get_running_loop()
        self._wanted = asyncio.Event()
        self._requested = 0  # requests seen on the loop
        self._done = 0  # requests covered by a finished publish
        self._finished = asyncio.Condition()
        self._task = self._loop.create_task(self._run(), name="routing-publisher")

    def request(self) -> None:
        """Ask for a publish (thread-safe, never blocks)."""
        self._loop.call_soon_threadsafe(self._arrive)

    def _arrive(self) -> None:
        self._requested += 1
        self._wanted.set()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            await asyncio.sleep(self.coalesce)
            self._wanted.clear()
            covered = self._requested
            try:
                await asyncio.to_thread(publish, self.cp)
            except Exception:
                log.exception("publishing the routing snapshot failed; trying again")
                self._wanted.set()
                await asyncio.sleep(PUBLISH_RETRY)
                continue
            async with self._finished:
                self._done = covered
                self._finished.notify_all()

    async def flush(self) -> None:
        """Until every request made before this call is published."""
        await asyncio.sleep(0)  # requests from threads land on the loop first
        target = self._requested
        async with self._finished:
            await self._finished.wait_for(lambda: self._done >= target)

    async def close(self) -> None:
        """Stop; what was requested and not yet published is published now (best effort)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._done < self._requested:
            try:
                await asyncio.to_thread(publish, self.cp)
            except Exception:
                log.exception("publishing the routing snapshot at shutdown failed")


def instances(cp: ControlPlane, deployment_id: str) -> InstanceState:
    if cp.runtime is None:
        return InstanceState(instances=0, state="stopped")
    return cp.runtime.instances(deployment_id)
