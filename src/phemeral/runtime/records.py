"""Records of launched process trees, so a restarted platform can find and replace them.

One JSON file per deployment (and per shared framework template) in
``{data_dir}/runtime/records/``: each launched root pid with its start time (pid reuse) and the
cgroup it ran in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

from phemeral import sandbox
from phemeral.runtime import procs


class Records:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "records"

    def path(self, deployment_id: str) -> Path:
        return self.dir / f"{deployment_id}.json"

    def shared_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.dir / f"shared-{digest}.json"

    def write(self, deployment_id: str, pid: int, cgroup: sandbox.Cgroup | None) -> None:
        """Add ``pid`` to the deployment's record (beside what it already holds)."""
        pids = [_entry(pid), *self.read(deployment_id).get("pids", [])]
        record = {"deployment_id": deployment_id, "pids": pids, "cgroup": _name(cgroup)}
        _store(self.path(deployment_id), record)

    def write_shared(self, key: str, pid: int, cgroup: sandbox.Cgroup | None) -> None:
        record = {"shared": key, "pids": [_entry(pid)], "cgroup": _name(cgroup)}
        _store(self.shared_path(key), record)

    def read(self, deployment_id: str) -> dict[str, Any]:
        try:
            data = json.loads(self.path(deployment_id).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remove(self, deployment_id: str) -> None:
        with contextlib.suppress(OSError):
            self.path(deployment_id).unlink()

    def remove_shared(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.shared_path(key).unlink()

    def replace_leftovers(self, cgroups: bool, cgroup_prefix: str, zygote_path: Path) -> None:
        """Kill every process tree an earlier run recorded (and its cgroup), then forget it.

        Its log pipes died with that run, so clean replacement (the next request wakes a fresh
        instance) is what keeps one owner per process: no orphans, no duplicates.
        """
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = {}
            for entry in record.get("pids", []):
                pid, started = int(entry.get("pid", 0)), entry.get("start_time")
                if pid > 1 and procs.is_same_process(pid, started):
                    procs.kill_tree(pid)
            name = record.get("cgroup")
            if name and cgroups:
                with contextlib.suppress(OSError):
                    sandbox.Cgroup(name).remove()
            with contextlib.suppress(OSError):
                path.unlink()
        if cgroups:
            for name in cgroup_names(cgroup_prefix):
                with contextlib.suppress(OSError):
                    sandbox.Cgroup(name).remove()
        # Templates and the servers they forked, even if their sandbox lost its launcher:
        # they all run this data dir's copy of the template script.
        procs.signal_all(procs.with_argument(str(zygote_path)), signal.SIGKILL)


def cgroup_names(prefix: str) -> list[str]:
    root = sandbox.CGROUP_ROOT
    base = (
        root / "phemeral"
        if (root / "cgroup.controllers").exists()
        else root / "memory" / "phemeral"
    )
    try:
        return [p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    except OSError:
        return []


def _entry(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start_time": procs.start_time(pid)}


def _name(cgroup: sandbox.Cgroup | None) -> str | None:
    return cgroup.name if cgroup is not None else None


def _store(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
