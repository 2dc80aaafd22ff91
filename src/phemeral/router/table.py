"""The route table (pure): which backend a normalised Host name reaches.

Built once per `RoutingSnapshot` and swapped whole by the router, so a lookup never reads the
database and never sees a half-applied change. Rules, in order:

- the base domain itself, ``localhost`` and IP literals → the control plane;
- ``{label}.{base}`` where ``label`` is ONE DNS label: a deployment id (its own domain, always
  that deployment), else an environment domain (its current deployment);
- a custom domain (a full host name attached to an environment) → its current deployment;
- anything else → not found. Matching is on label boundaries, so ``evil{base}`` or
  ``x.{label}.{base}`` never match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phemeral.models import DeploymentStatus, RoutingSnapshot
from phemeral.router.host import is_ip_literal, normalise_host


@dataclass(frozen=True, slots=True)
class PlatformRoute:
    """The platform's own API and dashboard (the base domain, `localhost`, IP literals)."""


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    deployment_id: str
    via: Literal["deployment", "environment"]
    status: DeploymentStatus
    https_redirect: bool = False  # plain-HTTP requests get a 308 to HTTPS
    hsts: bytes = b""  # a Strict-Transport-Security line for HTTPS responses, or nothing


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No deployment answers this host (unknown, no current deployment, or no Host at all)."""

    reason: Literal["unknown-host", "no-current-deployment", "no-host"]


Route = PlatformRoute | DeploymentTarget | NoRoute

PLATFORM = PlatformRoute()
UNKNOWN_HOST = NoRoute("unknown-host")
NO_HOST = NoRoute("no-host")
_CACHE_LIMIT = 4096


class RouteTable:
    """An immutable view of one snapshot, with a bounded cache of raw Host bytes → route."""

    __slots__ = ("_base", "_cache", "_snapshot", "_suffix")

    def __init__(self, snapshot: RoutingSnapshot) -> None:
        self._snapshot = snapshot
        self._base = snapshot.base_domain.lower().rstrip(".")
        self._suffix = "." + self._base
        self._cache: dict[bytes, Route | None] = {}

    @property
    def snapshot(self) -> RoutingSnapshot:
        return self._snapshot

    def resolve(self, host: str | None) -> Route:
        """Route a normalised host (see `normalise_host`); None means the request had no Host."""
        if host is None:
            return NO_HOST
        if host == self._base or host == "localhost" or is_ip_literal(host):
            return PLATFORM
        snapshot = self._snapshot
        if host in snapshot.custom_domains:
            return self._environment(host, snapshot.custom_domains[host])
        if not host.endswith(self._suffix):
            return UNKNOWN_HOST
        label = host[: -len(self._suffix)]
        if not label or "." in label:
            return UNKNOWN_HOST
        route = snapshot.deployments.get(label)
        if route is not None:
            return DeploymentTarget(label, "deployment", route.status)
        if label not in snapshot.domains:
            return UNKNOWN_HOST
        return self._environment(host, snapshot.domains[label])

    def _environment(self, host: str, current: str | None) -> Route:
        """The current deployment of the environment ``host`` belongs to, with its policy."""
        snapshot = self._snapshot
        route = None if current is None else snapshot.deployments.get(current)
        if route is None or current is None:
            return NoRoute("no-current-deployment")
        policy = snapshot.policies.get(host)
        if policy is None:
            return DeploymentTarget(current, "environment", route.status)
        hsts = b""
        if policy.hsts_max_age > 0:
            hsts = b"strict-transport-security: max-age=%d\r\n" % policy.hsts_max_age
        return DeploymentTarget(current, "environment", route.status, policy.https_redirect, hsts)

    def resolve_raw(self, raw_host: bytes) -> Route | None:
        """Normalise then resolve a raw Host value; None when the value is invalid (400).

        Results are cached per raw value (the table is replaced on every snapshot, so the cache
        never outlives the names it was computed from).
        """
        cache = self._cache
        try:
            return cache[raw_host]
        except KeyError:
            pass
        host = normalise_host(raw_host)
        route = None if host is None else self.resolve(host)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[raw_host] = route
        return route
