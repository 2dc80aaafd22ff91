"""The releases the data plane can wake, kept where a restarted data plane finds them.

One file per deployment in ``{data_dir}/dataplane/releases/{deployment_id}.json`` (0600, written
atomically): the release as `release.json` has it, with its environment encrypted by the data
dir's `SecretBox` (variables are secrets at rest here as in the database). Written on
``register``, removed on ``retire``, read on start so apps wake before the control plane is up.
``{data_dir}/dataplane/current.json`` lists the deployments whose extra processes run (the
last ``run_processes``), so they start again with the data plane.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from phemeral.build.release import release_from_json, release_to_json
from phemeral.errors import ConfigError
from phemeral.models import Release
from phemeral.secrets import SecretBox

log = logging.getLogger(__name__)


class ReleaseRegistry:
    def __init__(self, data_dir: Path, box: SecretBox) -> None:
        self.dir = data_dir / "dataplane" / "releases"
        self._box = box

    def _path(self, deployment_id: str) -> Path:
        if not deployment_id.isalnum():
            raise ValueError(f"not a deployment id: {deployment_id!r}")
        return self.dir / f"{deployment_id}.json"

    def save(self, release: Release) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = release_to_json(replace(release, env={}))
        data["env"] = self._box.encrypt(json.dumps(dict(release.env)))
        path = self._path(release.deployment_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)

    @property
    def current_path(self) -> Path:
        return self.dir.parent / "current.json"

    def save_current(self, deployment_ids: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.current_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(deployment_ids)))
        tmp.replace(self.current_path)

    def load_current(self) -> list[str]:
        try:
            ids = json.loads(self.current_path.read_text())
        except (OSError, ValueError):
            return []
        return [str(i) for i in ids] if isinstance(ids, list) else []

    def remove(self, deployment_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(deployment_id).unlink()

    def load_all(self) -> list[Release]:
        out = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                env = json.loads(self._box.decrypt(data.pop("env")))
                out.append(replace(release_from_json(data), env=env))
            except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
                log.warning("ignoring unreadable release record %s: %s", path, exc)
        return out
