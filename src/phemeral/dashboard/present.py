"""How control-plane values read on a page: ages, durations, triggers, log stages, settings.

Pure functions of API JSON and `now`; the templates only lay their results out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

BUILD_STAGES = ("source", "detect", "python", "install", "verify", "release", "boot")
_ERROR_LINE = re.compile(
    r"\b(error|errors|failed|failure|traceback|exception|fatal|not found|no such)\b", re.I
)


def parse_time(value: object) -> datetime | None:
    """An API timestamp (ISO 8601; naive means UTC) as an aware datetime, or None."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """A short human length of time: ``42s``, ``3m 05s``, ``2h 10m``, ``4d 3h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600}h"


def age(value: object, now: datetime) -> str:
    """How long ago a timestamp was, for people: ``just now``, ``5m 02s ago``."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    seconds = (now - moment).total_seconds()
    if seconds < 5:
        return "just now"
    return f"{span(seconds)} ago"


def duration(started: object, finished: object, now: datetime) -> str:
    """How long a build took, or has taken so far while it runs."""
    start = parse_time(started)
    if start is None:
        return "—"
    end = parse_time(finished)
    if end is None:
        return f"{span((now - start).total_seconds())} so far"
    return span((end - start).total_seconds())


_UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:\+00:00|Z)")


def clock(value: object) -> str:
    """A timestamp as ``HH:MM:SS.mmm`` UTC, for log lines."""
    if isinstance(value, str):
        # fast path for what the API sends (UTC ISO 8601): thousands of lines per page
        match = _UTC_ISO.fullmatch(value)
        if match:
            return f"{match[1]}.{(match[2] or '').ljust(3, '0')[:3]}"
    moment = parse_time(value)
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def stamp(value: object) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_sha(commit: object) -> str:
    if isinstance(commit, Mapping):
        commit = commit.get("sha") or commit.get("id")
    return str(commit)[:12] if commit else ""


def trigger_summary(trigger: object) -> str:
    """``push to main by alice (1a2b3c4d5e6f)`` or ``manual``."""
    if not isinstance(trigger, Mapping):
        return str(trigger) if trigger else "manual"
    kind = str(trigger.get("kind") or trigger.get("type") or "manual")
    if kind != "push":
        who = trigger.get("actor") or trigger.get("by")
        return f"{kind} by {who}" if who else kind
    parts = ["push"]
    if trigger.get("branch"):
        parts.append(f"to {trigger['branch']}")
    who = trigger.get("pusher") or trigger.get("author")
    if who:
        parts.append(f"by {who}")
    sha = short_sha(trigger.get("commit") or trigger.get("sha"))
    if sha:
        parts.append(f"({sha})")
    return " ".join(parts)


def instance_summary(instances: object) -> str:
    """Process state, kept apart from status: ``running (1)``, ``scaled to zero``."""
    if not isinstance(instances, Mapping):
        return "unknown"
    count = instances.get("instances") or 0
    state = str(instances.get("state") or "stopped")
    if isinstance(count, int) and count > 0 and state == "running":
        return f"running ({count})"
    if state in ("stopped", "dormant"):
        return "scaled to zero"
    return state


def wake_summary(instances: object) -> str:
    """The tier a deployment wakes from and the expected wake: ``template tier, ~15 ms``."""
    if not isinstance(instances, Mapping):
        return "unknown"
    tier = instances.get("tier")
    expected = instances.get("expected_wake_ms")
    about = f", ~{expected:.0f} ms" if isinstance(expected, int | float) else ""
    if tier == "running":
        return "running now: no wake needed"
    if instances.get("wake_path") == "command":
        return (
            f"the start command, run as given{about} (a cold start: not a gunicorn, uvicorn or "
            "hypercorn command line the platform can pre-load)"
        )
    if tier == "template":
        return f"template tier{about} (a pre-loaded template forks the server)"
    if tier == "paged" and instances.get("hot_set_in"):
        return (
            f"paged tier{about} (the pre-loaded template, its memory paged out to swap after a "
            "long idle but for the pages a wake touches, forks the server)"
        )
    if tier == "paged":
        return (
            f"paged tier{about} (the pre-loaded template, its memory paged out to swap after a "
            "long idle, is read back and forks the server)"
        )
    return f"deep tier{about} (nothing resident: the template loads first)"


def idle_memory(instances: object) -> str:
    """What a deployment keeps while scaled to zero, in MiB (PSS)."""
    if not isinstance(instances, Mapping):
        return "unknown"
    if instances.get("tier") == "running":
        return "— (running)"
    tier = instances.get("tier")
    if tier not in ("template", "paged"):
        return "none (nothing resident)"
    kb = instances.get("idle_pss_kb")
    if not isinstance(kb, int) or kb <= 0:
        return "not measured yet"
    text = f"{kb / 1024:.1f} MiB (PSS: its template, and its share of the project's shared one)"
    swap = instances.get("idle_swap_kb")
    if tier == "paged" and isinstance(swap, int) and swap > 0:
        text += f"; {swap / 1024:.1f} MiB paged out to swap"
    return text


@dataclass(frozen=True)
class LogLine:
    """One build log line, ready to show: its clock time, text and whether it reads as an error."""

    clock: str
    message: str
    error: bool


@dataclass
class Stage:
    name: str
    lines: list[LogLine] = field(default_factory=list)
    failed: bool = False
    started: str = ""
    ended: str = ""

    @property
    def error_lines(self) -> int:
        return sum(1 for line in self.lines if line.error)


def is_error_line(line: Mapping[str, Any]) -> bool:
    return bool(_ERROR_LINE.search(str(line.get("message", ""))))


def group_stages(
    lines: Sequence[Mapping[str, Any]], status: str, failure_reason: str | None = None
) -> list[Stage]:
    """Build log lines as consecutive stages; when the build failed, the stage it failed in
    (named in the reason if it names one, else the last stage) is marked failed."""
    stages: list[Stage] = []
    for line in lines:
        name = str(line.get("stage") or "build")
        message = str(line.get("message", ""))
        shown = LogLine(clock(line.get("timestamp")), message, bool(_ERROR_LINE.search(message)))
        if not stages or stages[-1].name != name:
            stages.append(Stage(name=name, started=shown.clock))
        stages[-1].lines.append(shown)
        stages[-1].ended = shown.clock
    if status == "failed" and stages:
        named = _stage_named_in(failure_reason, [s.name for s in stages])
        target = next((s for s in reversed(stages) if s.name == named), stages[-1])
        target.failed = True
    return stages


def _stage_named_in(reason: str | None, names: Sequence[str]) -> str | None:
    if not reason:
        return None
    lowered = reason.lower()
    for name in reversed(names):
        if re.search(rf"\b{re.escape(name.lower())}\b", lowered):
            return name
    return None


@dataclass(frozen=True)
class SettingRow:
    name: str
    value: str
    source: str


def setting_rows(settings: object) -> list[SettingRow]:
    """Detected settings and where each came from, whatever shape the snapshot uses:
    ``{k: {"value": v, "source": s}}``, ``{k: v, "sources": {k: s}}`` or ``{k: v,
    "k_source": s}``. Warnings are left to `setting_warnings`."""
    if not isinstance(settings, Mapping):
        return []
    sources = settings.get("sources")
    sources = sources if isinstance(sources, Mapping) else {}
    rows: list[SettingRow] = []
    for key, value in settings.items():
        if key in ("sources", "warnings"):
            continue
        if key.endswith("_source") and key.removesuffix("_source") in settings:
            continue
        source = sources.get(key) or settings.get(f"{key}_source") or ""
        if isinstance(value, Mapping) and "value" in value:
            source = value.get("source", source)
            value = value["value"]
        rows.append(
            SettingRow(name=str(key), value=_text(value), source=_text(source) if source else "")
        )
    return rows


def setting_warnings(settings: object) -> list[str]:
    if isinstance(settings, Mapping) and isinstance(settings.get("warnings"), list):
        return [str(w) for w in settings["warnings"]]
    return []


def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def environment_urls(env: Mapping[str, Any], url_for_label: Any) -> list[str]:
    """The public URLs of an environment, from whichever shape the API gives its domains:
    ``urls``, or ``domains`` as labels, host names or objects with a ``label``/``url``."""
    urls = env.get("urls")
    if isinstance(urls, list) and urls:
        return [str(u) for u in urls]
    out: list[str] = []
    for domain in env.get("domains") or []:
        if isinstance(domain, Mapping):
            if domain.get("url"):
                out.append(str(domain["url"]))
                continue
            domain = domain.get("label") or domain.get("host") or ""
        text = str(domain)
        if not text:
            continue
        if text.startswith(("http://", "https://")):
            out.append(text)
        elif "." in text:
            out.append(f"http://{text}")
        else:
            out.append(str(url_for_label(text)))
    return out


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a local path only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/projects"
    return target


FIRST_PAGE = "~"  # stands for "no cursor" inside a trail (never a character of a cursor)


def log_pages(
    filters: Mapping[str, str], cursor: str, trail: str, older: str | None
) -> tuple[str | None, str | None]:
    """Query strings of the newer and older pages of a newest-first log, or None (any list
    paged one way by cursor works alike: the projects page calls them previous and next).

    Cursors only go one way (older), so each page carries the ``trail`` of the cursors that
    led to it, comma-separated; "newer" pops the last one.
    """
    kept = {k: v for k, v in filters.items() if v}
    steps = [t for t in trail.split(",") if t] if trail else []
    newer: str | None = None
    if cursor:
        prev = steps[-1] if steps else FIRST_PAGE
        query = dict(kept)
        if prev != FIRST_PAGE:
            query["cursor"] = prev
        if steps[:-1]:
            query["trail"] = ",".join(steps[:-1])
        newer = urlencode(query)
    older_query: str | None = None
    if older:
        older_query = urlencode(
            {**kept, "cursor": older, "trail": ",".join([*steps, cursor or FIRST_PAGE])}
        )
    return newer, older_query


def log_position(cursor: str | None, seen: int) -> str:
    """A place in a build log as an SSE event id: the API cursor and how many lines after it
    were sent (cursors are URL-safe base64, so a space separates them safely)."""
    return f"{cursor or '-'} {seen}"


def parse_log_position(value: str | None) -> tuple[str | None, int] | None:
    """The place `log_position` wrote, from a reconnecting browser's Last-Event-ID."""
    if not value:
        return None
    cursor, _, seen = value.strip().partition(" ")
    if not cursor or not seen.isdigit():
        return None
    return (None if cursor == "-" else cursor), int(seen)
