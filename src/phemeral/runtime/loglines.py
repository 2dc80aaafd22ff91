"""Runtime log lines: cutting a byte stream into bounded lines, and a flood limiter.

Pure: no I/O, the clock is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_BYTES = 16 * 1024
RATE_PER_SECOND = 1000.0  # lines per second per deployment, sustained
BURST = 5000


class LineSplitter:
    """Feeds bytes in, gets complete lines out; a line longer than ``limit`` bytes is cut into
    pieces of at most ``limit`` bytes (never splitting a UTF-8 character)."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        if limit < 4:
            raise ValueError("line limit must be at least 4 bytes")
        self.limit = limit
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        buf = self._pending + data
        lines: list[str] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            lines.extend(split_long(buf[start:end].rstrip(b"\r"), self.limit))
            start = end + 1
        rest = buf[start:]
        while len(rest) > self.limit:
            cut = _utf8_boundary(rest, self.limit)
            lines.append(rest[:cut].decode("utf-8", "replace"))
            rest = rest[cut:]
        self._pending = rest
        return lines

    def flush(self) -> list[str]:
        """The unterminated tail (at end of stream)."""
        rest, self._pending = self._pending, b""
        return split_long(rest, self.limit) if rest else []


def split_long(line: bytes, limit: int = MAX_LINE_BYTES) -> list[str]:
    """One line (without its newline) as pieces of at most ``limit`` bytes each."""
    pieces: list[str] = []
    while len(line) > limit:
        cut = _utf8_boundary(line, limit)
        pieces.append(line[:cut].decode("utf-8", "replace"))
        line = line[cut:]
    pieces.append(line.decode("utf-8", "replace"))
    return pieces


def _utf8_boundary(data: bytes, limit: int) -> int:
    """The largest cut ≤ ``limit`` that does not fall inside a UTF-8 sequence."""
    cut = limit
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 else limit


@dataclass
class RateLimiter:
    """Token bucket per deployment: ``rate`` lines/s sustained, ``burst`` at once.

    `admit` says whether one line may pass; dropped lines are counted, and `take_dropped`
    returns (and resets) the count once lines flow again, for the "N lines dropped" marker.
    """

    rate: float = RATE_PER_SECOND
    burst: float = BURST
    tokens: float = 0.0
    updated: float | None = None
    dropped: int = 0

    def admit(self, now: float) -> bool:
        if self.updated is None:  # a fresh bucket starts full
            self.tokens = self.burst
            self.updated = now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


def dropped_marker(count: int) -> str:
    return f"[phemeral] {count} line{'s' if count != 1 else ''} dropped (log rate limit)"
