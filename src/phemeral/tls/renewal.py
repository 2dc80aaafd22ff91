"""When to ask for a certificate, and what to tell people about it (pure; ``now`` passed in).

- A domain without a certificate is due at once; one with a certificate 30 days before expiry
  (or when renewal is asked by hand).
- After a failure the next try waits ``base``, doubling per failure up to one day (Let's
  Encrypt allows 5 failed validations per host and hour; the default base of 5 minutes makes at
  most 4), or longer when the CA said so (``Retry-After``).
- A certificate that failed to renew is served until it expires; from 14 days before expiry the
  state says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

RENEW_BEFORE = timedelta(days=30)
WARN_BEFORE = timedelta(days=14)
MAX_BACKOFF = timedelta(days=1)

CertState = Literal["pending", "valid", "renewing", "renewal-failing", "failed", "expired"]


@dataclass(frozen=True)
class CertFacts:
    """What the store knows of one domain's certificate."""

    not_after: datetime | None
    failures: int
    next_try_at: datetime | None
    renew_now: bool = False


def renew_at(not_after: datetime) -> datetime:
    return not_after - RENEW_BEFORE


def is_due(facts: CertFacts, now: datetime) -> bool:
    """True when an order should be placed now."""
    if facts.next_try_at is not None and now < facts.next_try_at:
        return False
    if facts.failures > 0 or facts.renew_now or facts.not_after is None:
        return True
    return now >= renew_at(facts.not_after)


def next_due(facts: CertFacts) -> datetime | None:
    """When `is_due` turns true (None: it already is, or is waiting for nothing)."""
    if facts.next_try_at is not None:
        return facts.next_try_at
    if facts.not_after is None or facts.renew_now:
        return None
    return renew_at(facts.not_after)


def retry_at(
    failures: int, now: datetime, base: timedelta, retry_after: timedelta | None = None
) -> datetime:
    """The next try after the ``failures``-th failure in a row (1 = the first)."""
    delay: timedelta = min(base * (2 ** min(max(failures - 1, 0), 20)), MAX_BACKOFF)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF))
    when: datetime = now + delay
    return when


def is_serving(facts: CertFacts, now: datetime) -> bool:
    """The certificate may be served (it exists and has not expired)."""
    return facts.not_after is not None and now < facts.not_after


def state(facts: CertFacts, now: datetime) -> CertState:
    if facts.not_after is None:
        return "failed" if facts.failures else "pending"
    if now >= facts.not_after:
        return "expired"
    if facts.failures:
        return "renewal-failing"
    if facts.renew_now or now >= renew_at(facts.not_after):
        return "renewing"
    return "valid"


def warning(facts: CertFacts, now: datetime) -> str | None:
    """A sentence for people when a certificate nears expiry without a successor."""
    if facts.not_after is None or now >= facts.not_after:
        return None
    left = facts.not_after - now
    if left <= WARN_BEFORE:
        days = max(int(left.total_seconds() // 86400), 0)
        return f"the certificate expires in {days} day(s) and has not been renewed"
    return None
