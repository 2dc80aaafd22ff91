"""`Release` ⇄ JSON, so the runtime can be handed every release again after a restart."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from phemeral.models import AppSpec, Release, StartCommandSource


def release_to_json(release: Release) -> dict[str, Any]:
    data = asdict(release)
    for key in ("path", "workdir", "venv"):
        data[key] = str(data[key])
    data["start_command_source"] = str(release.start_command_source)
    data["env"] = {}  # the env lives encrypted in the deployment's snapshot, never in clear
    return data


def release_from_json(data: dict[str, Any], env: dict[str, str]) -> Release:
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
        app=AppSpec(**app) if app else None,
        env=env,
        uid=data.get("uid"),
        lock_hash=data.get("lock_hash"),
    )
