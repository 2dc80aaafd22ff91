"""When each deployment last served a request, kept where a restarted runtime reads it.

``{data_dir}/runtime/usage.json`` maps a deployment id to ``{"last_used": epoch seconds,
"memory_kb": the PSS of its own processes when last measured dormant, "group": its shared
framework template, "group_kb": that whole template's PSS, "imports": what its servers imported
after their fork (learned imports: a template loaded after a restart imports them too)}``
(`footprint`). The runtime writes
it from its idle sweep (when something changed, at most every `SAVE_INTERVAL` seconds) and at
close; after a platform restart it orders the templates to load again
(`idle.templates_to_warm`) and estimates what a template keeps until the sweep measured it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from phemeral.runtime.template import module_names

log = logging.getLogger(__name__)

SAVE_INTERVAL = 5.0


@dataclass(frozen=True)
class Usage:
    last_used: float | None  # wall clock (epoch seconds)
    memory_kb: int | None = None
    group: str | None = None
    group_kb: int | None = None
    imports: tuple[str, ...] = ()


class UsageFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Usage]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return {}
        out: dict[str, Usage] = {}
        if not isinstance(data, dict):
            return out
        for did, item in data.items():
            if not isinstance(item, dict):
                continue
            try:
                out[str(did)] = Usage(
                    _number(item.get("last_used")),
                    _int(item.get("memory_kb")),
                    str(item["group"]) if item.get("group") is not None else None,
                    _int(item.get("group_kb")),
                    # a template's word filled it: bounded as when it was said
                    tuple(module_names(item.get("imports"))),
                )
            except (TypeError, ValueError):
                continue
        return out

    def save(self, usage: dict[str, Usage]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({did: asdict(u) for did, u in sorted(usage.items())}, file)
        tmp.replace(self.path)


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
