"""W3 as a property: whatever order deliveries arrive and builds finish in, the newest push that
built successfully ends up current. `push_sequence` (here) and the commit graph (each push's
commit descends from the previous one's) feed the control plane's rule
(`phemeral.deploys.should_promote`), both pure, so every interleaving is cheap to check.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from phemeral.deploys import should_promote
from phemeral.github.events import push_sequence
from phemeral.models import CommitRelation, TriggerKind

RECEIVED = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


def relation(i: int, j: int) -> CommitRelation:
    """Pushes form a chain: push i's commit descends from push i - 1's."""
    if i == j:
        return CommitRelation.SAME
    return CommitRelation.DESCENDANT if i > j else CommitRelation.ANCESTOR


def simulate(
    pushed_at: list[int | None],
    arrival: list[int],
    finish: list[int],
    ok: list[bool],
    *,
    graph: bool = False,
) -> int | None:
    """Index of the push current at the end; ``graph``: builds report the commit relation."""
    seqs: dict[int, int] = {}
    for i in arrival:
        seqs[i] = push_sequence(pushed_at[i], RECEIVED, seqs.get(i - 1))
    promoted, current = 0, None
    for i in finish:
        known = graph and current is not None
        decision = should_promote(
            TriggerKind.PUSH,
            True,
            seqs[i],
            promoted,
            current_commit=f"{current:040d}" if current is not None else None,
            relation=relation(i, current) if known and current is not None else None,
        )
        if ok[i] and decision.promote:
            promoted, current = max(promoted, seqs[i]), i
    return current


@st.composite
def histories(draw: st.DrawFn, *, ties: bool) -> tuple[list[int], list[int], list[int], list[bool]]:
    n = draw(st.integers(2, 6))
    gaps = draw(st.lists(st.integers(0 if ties else 1, 30), min_size=n, max_size=n))
    pushed_at, t = [], 1_790_000_000
    for gap in gaps:
        t += gap
        pushed_at.append(t)
    arrival = draw(st.permutations(range(n)))
    finish = draw(st.permutations(range(n)))
    ok = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pushed_at, list(arrival), list(finish), ok


def newest_ok(ok: list[bool]) -> int | None:
    return max((i for i, good in enumerate(ok) if good), default=None)


@settings(max_examples=200, deadline=None)
@given(histories(ties=False))
def test_newest_successful_push_is_current_in_any_order(
    history: tuple[list[int], list[int], list[int], list[bool]],
) -> None:
    pushed_at, arrival, finish, ok = history
    assert simulate(list(pushed_at), arrival, finish, ok) == newest_ok(ok)


@settings(max_examples=200, deadline=None)
@given(histories(ties=True))
def test_same_second_pushes_delivered_in_order(
    history: tuple[list[int], list[int], list[int], list[bool]],
) -> None:
    """Pushes within one second are ordered by their parent link when delivered in order."""
    pushed_at, _, finish, ok = history
    in_order = list(range(len(pushed_at)))
    assert simulate(list(pushed_at), in_order, finish, ok) == newest_ok(ok)


@settings(max_examples=300, deadline=None)
@given(histories(ties=True), st.booleans())
def test_commit_graph_orders_any_delivery(
    history: tuple[list[int], list[int], list[int], list[bool]], clocks: bool
) -> None:
    """With the commit graph, neither shared seconds, missing push times nor a late parent
    delivery can let an older push overtake a newer one."""
    pushed_at, arrival, finish, ok = history
    times: list[int | None] = list(pushed_at) if clocks else [None] * len(pushed_at)
    assert simulate(times, arrival, finish, ok, graph=True) == newest_ok(ok)
