"""``release.json``: the immutable record of a built release, written last and atomically.

Its presence means the release is complete; a build that fails never writes it. The runtime
reads it back with `read_release`. `interpreter_prefix` names the base interpreter the venv
points at, which a sandbox must bind read-only (at the same path) for the venv to start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from phemeral.errors import NotFound
from phemeral.models import AppSpec, Endpoint, Release, StartCommandSource

FILENAME = "release.json"


def release_to_json(release: Release) -> dict[str, Any]:
    data = asdict(release)
    for key in ("path", "workdir", "venv"):
        data[key] = str(data[key])
    data["start_command_source"] = release.start_command_source.value
    data["env"] = dict(release.env)
    data["processes"] = dict(release.processes)
    return data


def release_from_json(data: dict[str, Any]) -> Release:
    app = data.get("app")
    return Release(
        deployment_id=data["deployment_id"],
        project=data["project"],
        environment=data["environment"],
        path=Path(data["path"]),
        workdir=Path(data["workdir"]),
        venv=Path(data["venv"]),
        python_version=data["python_version"],
        start_command=data["start_command"],
        start_command_source=StartCommandSource(data["start_command_source"]),
        app=AppSpec(**app) if isinstance(app, dict) else None,
        env=dict(data.get("env") or {}),
        uid=data.get("uid"),
        lock_hash=data.get("lock_hash"),
        release_command=data.get("release_command"),
        release_command_source=data.get("release_command_source"),
        release_timeout=data.get("release_timeout"),
        processes=dict(data.get("processes") or {}),
        health_check_path=data.get("health_check_path") or "/",
        idle_timeout=data.get("idle_timeout"),
        allow=tuple(Endpoint(str(e["host"]), int(e["port"])) for e in data.get("allow") or ()),
    )


def write_release(release: Release) -> Path:
    """Write ``release.json`` atomically (temp file, fsync, rename); 0600, owned by root."""
    target = release.path / FILENAME
    tmp = release.path / f".{FILENAME}.tmp"
    payload = json.dumps(release_to_json(release), indent=2, sort_keys=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(payload + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)
    return target


def read_release(path: Path) -> Release:
    """The release at ``path`` (the release directory or its release.json)."""
    file = path if path.name == FILENAME else path / FILENAME
    try:
        return release_from_json(json.loads(file.read_text()))
    except FileNotFoundError as exc:
        raise NotFound(f"no complete release at {file.parent}") from exc


def interpreter_prefix(venv: Path) -> Path | None:
    """The base interpreter's prefix (``home`` in pyvenv.cfg, minus ``bin``)."""
    try:
        text = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            home = Path(value.strip()).resolve()
            return home.parent if home.name == "bin" else home
    return None
