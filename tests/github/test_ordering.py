"""W3 as a property: whatever order deliveries arrive and builds finish in, the newest push that
built successfully ends up current. `push_sequence` (here) feeds the control plane's
compare-and-set rule (`phemeral.deploys.should_promote`), both pure, so every interleaving is
cheap to check.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from phemeral.deploys import should_promote
from phemeral.github.events import push_sequence
from phemeral.models import TriggerKind

RECEIVED = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


def simulate(
    pushed_at: list[int], arrival: list[int], finish: list[int], ok: list[bool]
) -> int | None:
    """Index of the push current at the end (pushes form a chain: push i's parent is i - 1)."""
    seqs: dict[int, int] = {}
    for i in arrival:
        seqs[i] = push_sequence(pushed_at[i], RECEIVED, seqs.get(i - 1))
    promoted, current = 0, None
    for i in finish:
        if ok[i] and should_promote(TriggerKind.PUSH, True, seqs[i], promoted):
            promoted, current = seqs[i], i
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
    assert simulate(pushed_at, arrival, finish, ok) == newest_ok(ok)


@settings(max_examples=200, deadline=None)
@given(histories(ties=True))
def test_same_second_pushes_delivered_in_order(
    history: tuple[list[int], list[int], list[int], list[bool]],
) -> None:
    """Pushes within one second are ordered by their parent link when delivered in order."""
    pushed_at, _, finish, ok = history
    in_order = list(range(len(pushed_at)))
    assert simulate(pushed_at, in_order, finish, ok) == newest_ok(ok)
