"""When instances stop, which templates stay resident and what a wake is expected to take: pure
decisions, every input (``now`` and sizes too) an argument."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def is_idle(last_request_at: float, in_flight: int, now: float, timeout: float) -> bool:
    """A running deployment is idle once nothing is in flight and ``timeout`` s passed since
    its last request (started or finished, whichever is later)."""
    return in_flight == 0 and now - last_request_at >= timeout


@dataclass(frozen=True)
class DormantTemplate:
    deployment_id: str
    last_used: float  # its last request (else when its template was loaded), runtime clock
    memory_kb: int  # what it keeps while dormant: its idle PSS (see `footprint`)
    paged: bool = False  # on the paged tier already: in swap, not counted against the budget
    pageable: bool = False  # a template of its own that swap can take (the paged tier)
    # a shared template's only user, about to get one of its own (`_collapse`): moved out at a
    # later sweep, if still over the budget then
    waits: bool = False


@dataclass(frozen=True)
class Evictions:
    page_out: list[str]  # to the paged tier (swap), in this order
    drop: list[str]  # to the deep tier (nothing resident), in this order


def templates_to_evict(
    dormant: Iterable[DormantTemplate],
    now: float,
    budget_kb: int,
    available_kb: int | None,
    low_water_kb: int,
    swap_room_kb: int = 0,
) -> Evictions:
    """Dormant templates to move out of memory, and where to.

    Age alone never evicts: a dormant template stays as long as memory allows. While the
    resident ones (not paged) together keep more than ``budget_kb``, the least recently used
    go first: to the paged tier when ``pageable`` and ``swap_room_kb`` still holds them, else
    to the deep tier (one that ``waits`` is passed over this time). Then, while the host's
    available memory (plus what was freed) is under ``low_water_kb``, the least recently used
    of the rest, paged ones too, are dropped. A use in the future of ``now`` (a clock step)
    counts as now; equal uses go by id, for a stable order.
    """
    items = sorted(dormant, key=lambda d: (min(d.last_used, now), d.deployment_id))
    resident = [d for d in items if not d.paged]
    total = sum(max(0, d.memory_kb) for d in resident)
    page_out: list[str] = []
    drop: list[str] = []
    freed = 0
    room = swap_room_kb
    for item in resident:
        if total - freed <= budget_kb:
            break
        if item.waits:
            continue
        if item.pageable and max(0, item.memory_kb) <= room:
            page_out.append(item.deployment_id)
            room -= max(0, item.memory_kb)
        else:
            drop.append(item.deployment_id)
        freed += max(0, item.memory_kb)
    chosen = set(page_out) | set(drop)
    for item in items:
        if available_kb is None or available_kb + freed >= low_water_kb:
            break
        if item.deployment_id in chosen:
            continue
        drop.append(item.deployment_id)
        freed += max(0, item.memory_kb)
    return Evictions(page_out, drop)


@dataclass(frozen=True)
class PageCandidate:
    """A dormant template that keeps its memory resident, or was used since it was paged out."""

    deployment_id: str
    last_used: float  # as for `DormantTemplate`
    paged_at: float | None  # when its memory was last paged out (runtime clock); None: never
    memory_kb: int = 0  # what it keeps resident (PSS), so about what paging it out writes


@dataclass(frozen=True)
class PageOut:
    deployment_ids: list[str]  # to page out now, in this order
    swap_short: bool = False  # some that are due stay resident: swap would not hold them


def templates_to_page_out(
    candidates: Iterable[PageCandidate],
    now: float,
    after: float,
    limit: int,
    swap_free_kb: int,
    reserve_kb: int = 0,
) -> PageOut:
    """Dormant templates whose memory to page out now (the paged tier), least recently used
    first, at most ``limit``: those unused for ``after`` s and not paged out since their last
    use, while ``swap_free_kb`` less ``reserve_kb`` holds their memory. ``after`` ≤ 0 pages
    nothing out. A use in the future of ``now`` counts as now."""
    if after <= 0 or limit <= 0:
        return PageOut([])
    due = [
        c
        for c in candidates
        if now - min(c.last_used, now) >= after
        and (c.paged_at is None or c.paged_at < min(c.last_used, now))
    ]
    due.sort(key=lambda c: (min(c.last_used, now), c.deployment_id))
    room = swap_free_kb - reserve_kb
    chosen: list[str] = []
    for candidate in due[:limit]:
        if candidate.memory_kb > room:
            return PageOut(chosen, swap_short=True)
        room -= max(0, candidate.memory_kb)
        chosen.append(candidate.deployment_id)
    return PageOut(chosen)


@dataclass(frozen=True)
class Rehearsal:
    """A dormant template that a request would teach its hot set (`rehearsal`)."""

    deployment_id: str
    last_used: float  # as for `DormantTemplate`


def rehearsals_due(
    candidates: Iterable[Rehearsal], now: float, quiet: float, limit: int
) -> list[str]:
    """The deployments to rehearse now, most recently used first (the likeliest to be woken
    next), at most ``limit``: those unused for ``quiet`` s (a user's request may come first
    and teach the same). A use in the future of ``now`` counts as now."""
    due = [c for c in candidates if now - min(c.last_used, now) >= quiet]
    due.sort(key=lambda c: (-min(c.last_used, now), c.deployment_id))
    return [c.deployment_id for c in due[: max(0, limit)]]


@dataclass(frozen=True)
class HotSet:
    """The hot set of a paged template: what reading it back keeps resident."""

    deployment_id: str
    last_used: float  # as for `DormantTemplate`
    size_kb: int  # its anonymous pages (file pages are the page cache's, shared)


def hot_sets_to_keep(hot_sets: Iterable[HotSet], budget_kb: int) -> set[str]:
    """The hot sets paged templates keep resident together within ``budget_kb``: those of the
    most recently used deployments first; one that does not fit in what is left is passed
    over (a smaller, older one may still fit)."""
    keep: set[str] = set()
    room = budget_kb
    for hot in sorted(hot_sets, key=lambda h: (-h.last_used, h.deployment_id)):
        if 0 <= hot.size_kb <= room:
            keep.add(hot.deployment_id)
            room -= hot.size_kb
    return keep


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


# What a wake takes before the runtime measured any (ms, from the request for a wake to the end
# of the first answer after it; quiet-machine first-byte figures of `bench/wake.py`, hello-world
# apps): from a dormant template, from one paged out to swap with its hot set kept in memory
# (as fast), from one paged out whole (its memory read back first), from nothing resident
# (the template loads first), a command run as given.
DEFAULT_WAKE_MS = {
    "template": 15.0,
    "hot": 15.0,
    "paged": 60.0,
    "deep": 400.0,
    "command": 400.0,
}
WAKE_SAMPLES = 50  # the last wakes of a kind that the estimate looks at


def expected_wake_ms(recent: Sequence[float], default: float) -> float:
    """The median of the last `WAKE_SAMPLES` measured wakes of one kind, else ``default``."""
    window = [ms for ms in recent[-WAKE_SAMPLES:] if ms >= 0]
    return statistics.median(window) if window else default
