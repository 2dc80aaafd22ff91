"""Crash restart schedule: immediate, then doubling to a cap, reset after a healthy period.

Pure: the state is a value, every function takes ``now`` and returns a new value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

BASE_DELAY = 10.0  # seconds before the second restart
MAX_DELAY = 300.0
HEALTHY_RESET = 600.0  # running this long without a crash forgets earlier crashes


@dataclass(frozen=True)
class CrashHistory:
    crashes: int = 0  # consecutive crashes (since the last healthy period)
    last_crash_at: float | None = None
    retry_at: float | None = None  # no start before this moment
    total_restarts: int = 0


def restart_delay(crashes: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Delay before the restart that follows the ``crashes``-th consecutive crash.

    1 → 0 (immediate), 2 → base, 3 → 2·base, … capped at ``cap``.
    """
    if crashes <= 1:
        return 0.0
    return float(min(cap, base * 2 ** (crashes - 2)))


def record_crash(
    history: CrashHistory,
    now: float,
    running_since: float | None,
    *,
    base: float = BASE_DELAY,
    cap: float = MAX_DELAY,
    healthy_reset: float = HEALTHY_RESET,
) -> CrashHistory:
    """The history after a crash at ``now`` of an instance that started at ``running_since``."""
    crashes = history.crashes
    if running_since is not None and now - running_since >= healthy_reset:
        crashes = 0
    crashes += 1
    return replace(
        history,
        crashes=crashes,
        last_crash_at=now,
        retry_at=now + restart_delay(crashes, base, cap),
        total_restarts=history.total_restarts + 1,
    )


def may_start(history: CrashHistory, now: float) -> bool:
    return history.retry_at is None or now >= history.retry_at


def retry_after(history: CrashHistory, now: float) -> float:
    """Seconds until a start is allowed (0 when it is)."""
    if history.retry_at is None:
        return 0.0
    return max(0.0, history.retry_at - now)
