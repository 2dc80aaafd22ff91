"""When certificates are ordered, retried and reported (pure), and which names may be attached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from phemeral.errors import InvalidInput
from phemeral.store.names import check_custom_domain
from phemeral.tls.renewal import CertFacts, is_due, next_due, retry_at, state, warning

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def facts(not_after: datetime | None = None, failures: int = 0, next_try: datetime | None = None):  # type: ignore[no-untyped-def]
    return CertFacts(not_after=not_after, failures=failures, next_try_at=next_try)


def test_due_without_a_certificate_and_thirty_days_before_expiry() -> None:
    assert is_due(facts(), NOW) and state(facts(), NOW) == "pending"
    assert not is_due(facts(NOW + 31 * DAY), NOW)
    assert state(facts(NOW + 31 * DAY), NOW) == "valid"
    assert next_due(facts(NOW + 31 * DAY)) == NOW + DAY
    assert is_due(facts(NOW + 30 * DAY), NOW)
    assert state(facts(NOW + 29 * DAY), NOW) == "renewing"
    by_hand = CertFacts(not_after=NOW + 80 * DAY, failures=0, next_try_at=None, renew_now=True)
    assert is_due(by_hand, NOW) and state(by_hand, NOW) == "renewing"


def test_failures_back_off_and_a_failed_renewal_keeps_serving_until_expiry() -> None:
    base = timedelta(minutes=5)
    assert retry_at(1, NOW, base) == NOW + base
    assert retry_at(3, NOW, base) == NOW + 4 * base
    assert retry_at(40, NOW, base) == NOW + DAY  # capped
    assert retry_at(1, NOW, base, retry_after=timedelta(hours=1)) == NOW + timedelta(hours=1)
    waiting = facts(NOW + 20 * DAY, failures=2, next_try=NOW + base)
    assert not is_due(waiting, NOW) and is_due(waiting, NOW + base)
    assert next_due(waiting) == NOW + base
    assert state(waiting, NOW) == "renewal-failing"
    assert warning(waiting, NOW) is None
    assert "expires in 9 day" in (
        warning(facts(NOW + 9 * DAY + timedelta(seconds=60), failures=3), NOW) or ""
    )
    assert state(facts(NOW - DAY, failures=3), NOW) == "expired"
    assert state(facts(None, failures=1), NOW) == "failed"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Shop.Example.com.", "shop.example.com"), ("a-b.c.example.co.uk", "a-b.c.example.co.uk")],
)
def test_custom_domains_are_full_host_names(raw: str, expected: str) -> None:
    assert check_custom_domain(raw, "phemeral.example.net") == expected


@pytest.mark.parametrize(
    "raw",
    ["localhost", "*.example.com", "1.2.3.4", "a..b.com", "-a.example.com", "x_y.example.com",
     "phemeral.example.net", "shop.phemeral.example.net", "a" * 64 + ".com"],
)  # fmt: skip
def test_custom_domains_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        check_custom_domain(raw, "phemeral.example.net")
