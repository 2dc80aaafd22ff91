"""Failed authentications per client address: after too many, the address waits (pure).

`AuthFailures` is a table of per-address records; every method takes ``now`` (monotonic
seconds), so the policy is tested without a clock. ``max_failures`` failures within ``window``
seconds block the address for ``block`` seconds; every failure while blocked doubles the block
(up to ``max_block``). A success does not clear a record: a guesser holding one good token gains
nothing. The table is bounded: when full, expired records go first, then the oldest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FailurePolicy:
    max_failures: int = 10
    window: float = 60.0
    block: float = 60.0
    max_block: float = 900.0
    max_addresses: int = 10_000


@dataclass
class _Record:
    first: float  # start of the current counting window
    count: int = 0
    blocked_until: float = 0.0
    block: float = 0.0  # the last block's length (doubles while the address keeps failing)


@dataclass
class AuthFailures:
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    records: dict[str, _Record] = field(default_factory=dict)

    def retry_after(self, address: str, now: float) -> int | None:
        """Whole seconds this address must still wait, or None when it may try."""
        record = self.records.get(address)
        if record is None or record.blocked_until <= now:
            return None
        return max(1, math.ceil(record.blocked_until - now))

    def failed(self, address: str, now: float) -> int | None:
        """Count a failure; the wait it causes (seconds), or None while under the limit."""
        policy = self.policy
        record = self.records.get(address)
        if record is None:
            self._make_room(now)
            record = self.records[address] = _Record(first=now)
        if record.blocked_until > now:
            record.block = min(record.block * 2, policy.max_block)
            record.blocked_until = now + record.block
            return self.retry_after(address, now)
        if now - record.first > policy.window:
            record.first, record.count = now, 0
            if record.block and now - record.blocked_until > policy.max_block:
                record.block = 0.0  # well-behaved for long enough: back to the first block
        record.count += 1
        if record.count < policy.max_failures:
            return None
        record.block = (
            policy.block if record.block == 0 else min(record.block * 2, policy.max_block)
        )
        record.blocked_until = now + record.block
        record.first, record.count = now, 0
        return self.retry_after(address, now)

    def _make_room(self, now: float) -> None:
        if len(self.records) < self.policy.max_addresses:
            return
        expired = [
            a
            for a, r in self.records.items()
            if r.blocked_until <= now and now - r.first > self.policy.window
        ]
        for address in expired:
            del self.records[address]
        while len(self.records) >= self.policy.max_addresses:
            oldest = min(self.records, key=lambda a: self.records[a].first)
            del self.records[oldest]
