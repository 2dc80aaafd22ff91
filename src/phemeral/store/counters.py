"""Monotonic counters kept in the database (the ``counters`` table).

`take(s, name)` returns the next value of a counter inside the caller's write transaction; the
UPDATE takes the row lock (PostgreSQL) or the database write lock (SQLite ``BEGIN IMMEDIATE``),
so two transactions never get the same value, and a value once taken is never handed out again,
even if every row that used it is deleted.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from phemeral.store.schema import Counter

APP_UID = "app_uid"
FIRST_APP_UID = 20000  # the counter's floor: app uids are FIRST_APP_UID + 1, + 2, …


def take(s: Session, name: str, *, floor: int = 0) -> int:
    """The counter's next value (created at ``floor`` + 1 on first use)."""
    changed = s.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + 1))
    if getattr(changed, "rowcount", 0) == 0:
        s.add(Counter(name=name, value=floor + 1))
        s.flush()
        return floor + 1
    value = s.scalar(select(Counter.value).where(Counter.name == name))
    assert value is not None
    return int(value)


def next_app_uid(s: Session) -> int:
    return take(s, APP_UID, floor=FIRST_APP_UID)
