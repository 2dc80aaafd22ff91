"""Where a wake's time goes: its phases, marked as the wake passes them, and the event-loop
stalls that overlapped it (`loopwatch`).

A wake runs on the event loop and in threads: reads submitted for a paged template
(``read_back``), the wait for the template (``template``: its lock, or a deep wake's load),
the app directory's throwaway layer (``view``), the fork (``fork``: ``forked`` of it spent
inside the template, the rest getting the message to and the reply from it) and the first
answer's way through the new server (``answer``). A slow wake's trace is logged whole, and
the last one is kept with the deployment's state, so a tail can be told from the rest without
a debugger. Marking is a clock read and a list append.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SLOW_WAKE_MS = 500.0  # a wake at least this slow is logged with its phases


@dataclass
class WakeTrace:
    """One wake's phases in order (name, ms), ``kind`` the tier it started from."""

    kind: str
    started: float = field(default_factory=time.perf_counter)
    phases: list[tuple[str, float]] = field(default_factory=list)
    stalled_ms: float = 0.0  # event-loop stalls that overlapped it
    _last: float = 0.0

    def __post_init__(self) -> None:
        self._last = self.started

    def mark(self, phase: str, now: float | None = None) -> None:
        """End the phase ``phase`` now: the time since the last mark is its own."""
        now = time.perf_counter() if now is None else now
        self.phases.append((phase, (now - self._last) * 1000))
        self._last = now

    def note(self, phase: str, ms: float) -> None:
        """A figure measured elsewhere (inside the template), shown as a part of the last."""
        self.phases.append((phase, ms))

    @property
    def total_ms(self) -> float:
        return (self._last - self.started) * 1000

    def figures(self) -> dict[str, float]:
        """Phase → ms, rounded to 0.1 ms (the state API's form); several marks of one name add."""
        out: dict[str, float] = {}
        for name, ms in self.phases:
            out[name] = round(out.get(name, 0.0) + ms, 1)
        if self.stalled_ms:
            out["loop_stalled"] = round(self.stalled_ms, 1)
        return out


def describe(trace: WakeTrace) -> str:
    """One line: ``paged wake 812 ms: read_back 640, template 0.1, …; the event loop stalled
    300 ms meanwhile``."""
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in trace.phases)
    line = f"{trace.kind} wake {trace.total_ms:.0f} ms: {parts or 'no phase marked'}"
    if trace.stalled_ms:
        line += f"; the event loop stalled {trace.stalled_ms:.0f} ms meanwhile"
    return line
