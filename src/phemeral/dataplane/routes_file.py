"""The routing table where a restarted router finds it: ``{data_dir}/routing.json``.

Written atomically (a temporary file in the same folder, fsync, rename) on every snapshot the
control plane publishes, so a reader sees the old table or the new one, never a torn one. Mode
0600: it lists every project, environment and domain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from phemeral.dataplane.wire import snapshot_from_json, snapshot_to_json
from phemeral.models import RoutingSnapshot

FILENAME = "routing.json"
log = logging.getLogger(__name__)


def routes_path(data_dir: Path) -> Path:
    return data_dir / FILENAME


def save(data_dir: Path, snapshot: RoutingSnapshot) -> None:
    path = routes_path(data_dir)
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    body = json.dumps(snapshot_to_json(snapshot), separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load(data_dir: Path) -> RoutingSnapshot | None:
    """The last saved table, or None when there is none (or it cannot be read)."""
    path = routes_path(data_dir)
    try:
        data = json.loads(path.read_bytes())
        return snapshot_from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("ignoring unreadable routing table %s: %s", path, exc)
        return None
