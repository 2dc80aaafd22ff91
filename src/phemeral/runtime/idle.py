"""When instances stop and templates go: pure decisions, every input (``now`` too) an argument."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def is_idle(last_request_at: float, in_flight: int, now: float, timeout: float) -> bool:
    """A running deployment is idle once nothing is in flight and ``timeout`` s passed since
    its last request (started or finished, whichever is later)."""
    return in_flight == 0 and now - last_request_at >= timeout


@dataclass(frozen=True)
class DormantTemplate:
    deployment_id: str
    dormant_since: float  # when its last instance stopped (or it was loaded)
    memory_kb: int  # USS held while dormant


def templates_to_evict(
    dormant: Iterable[DormantTemplate],
    now: float,
    ttl: float,
    available_kb: int | None,
    low_water_kb: int,
) -> list[str]:
    """Dormant templates to drop to the deep tier (nothing resident).

    Every template dormant for ``ttl`` seconds goes; then, while the host's available memory is
    under ``low_water_kb``, the longest-dormant of the rest go until enough would be freed.
    """
    items = sorted(dormant, key=lambda d: d.dormant_since)
    evict = [d.deployment_id for d in items if now - d.dormant_since >= ttl]
    if available_kb is None or available_kb >= low_water_kb:
        return evict
    freed = 0
    for item in items:
        if item.deployment_id in evict:
            continue
        if available_kb + freed >= low_water_kb:
            break
        evict.append(item.deployment_id)
        freed += item.memory_kb
    return evict


def sweep_interval(idle_timeouts: Iterable[float], ceiling: float = 1.0) -> float:
    """How often to look: a quarter of the shortest timeout, at most ``ceiling`` s."""
    shortest = min(idle_timeouts, default=ceiling * 4)
    return max(0.02, min(ceiling, shortest / 4))


# A template's memory before it was ever measured here: the per-deployment template of a small
# app, and a project's shared framework template (FastAPI + uvicorn, measured USS, rounded up).
DEFAULT_TEMPLATE_KB = 16 * 1024
DEFAULT_SHARED_KB = 48 * 1024


@dataclass(frozen=True)
class WarmCandidate:
    """A deployment whose template could be loaded ahead of its first request."""

    deployment_id: str
    last_used: float | None  # when it last served a request (None: never, as far as known)
    memory_kb: int  # its own template's memory, last measured (or an estimate)
    group: str | None = None  # its shared framework template (loaded once per group)
    group_kb: int = 0  # that shared template's memory, counted with the group's first member


def templates_to_warm(candidates: Iterable[WarmCandidate], budget_kb: int, now: float) -> list[str]:
    """The deployments whose templates to load again, in order: most recently used first
    (never used last, by id for a stable order), stopping before the first one that would take
    the total over ``budget_kb``. A shared framework template counts once, with the first of its
    group. Uses in the future of ``now`` (a clock step) count as now."""
    items = sorted(
        candidates,
        key=lambda c: (
            c.last_used is None,
            -(min(c.last_used, now) if c.last_used is not None else 0.0),
            c.deployment_id,
        ),
    )
    chosen: list[str] = []
    groups: set[str] = set()
    total = 0
    for item in items:
        cost = max(0, item.memory_kb)
        if item.group is not None and item.group not in groups:
            cost += max(0, item.group_kb)
        if total + cost > budget_kb:
            break
        total += cost
        chosen.append(item.deployment_id)
        if item.group is not None:
            groups.add(item.group)
    return chosen
