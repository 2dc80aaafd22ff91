"""The default start command for a detected app, and the choice between it and a custom one.

ASGI apps run under uvicorn, WSGI apps under gunicorn, always bound to ``0.0.0.0:$PORT``;
factories use each server's factory syntax. Never a development server.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from phemeral.models import AppSpec, StartCommandSource

if TYPE_CHECKING:
    from phemeral.detect.detection import Detection


def default_command(spec: AppSpec, app_dir: str = "") -> str:
    """``uvicorn main:app --host 0.0.0.0 --port $PORT`` / ``gunicorn --bind 0.0.0.0:$PORT …``."""
    if spec.server in ("hypercorn", "granian", "daphne"):
        return _other_server_command(spec, app_dir)
    if spec.server == "uvicorn":
        parts = ["uvicorn", spec.target, "--host", "0.0.0.0", "--port", "$PORT"]
        if spec.factory:
            parts.append("--factory")
        if app_dir:
            parts += ["--app-dir", shlex.quote(app_dir)]
        return " ".join(parts)
    target = f"'{spec.target}()'" if spec.factory else spec.target
    parts = ["gunicorn", "--bind", "0.0.0.0:$PORT"]
    if app_dir:
        parts += ["--pythonpath", shlex.quote(app_dir)]
    return " ".join([*parts, target])


def _other_server_command(spec: AppSpec, app_dir: str) -> str:
    """hypercorn / granian / daphne, bound to ``0.0.0.0:$PORT`` (none of them reads $PORT).

    None of them has a python-path option, so an ``app_dir`` goes first as ``PYTHONPATH``.
    """
    prefix = [f"PYTHONPATH={shlex.quote(app_dir)}"] if app_dir else []
    if spec.server == "hypercorn":
        target = f"'{spec.target}()'" if spec.factory else spec.target
        return " ".join([*prefix, "hypercorn", "--bind", "0.0.0.0:$PORT", target])
    if spec.server == "granian":
        parts = ["granian", "--interface", spec.interface, "--host", "0.0.0.0", "--port", "$PORT"]
        if spec.factory:
            parts.append("--factory")
        return " ".join([*prefix, *parts, spec.target])
    return " ".join([*prefix, "daphne", "-b", "0.0.0.0", "-p", "$PORT", spec.target])


def resolve_start_command(
    custom: str | None, detection: Detection
) -> tuple[str, StartCommandSource]:
    """The project's saved custom command, else the repository's declaration, else the
    autodetected default (pure; detection already chose between the last two)."""
    if custom is not None and custom.strip():
        return custom.strip(), StartCommandSource.CUSTOM
    return detection.start_command, StartCommandSource(detection.start_command_source)


def why_start_command(custom: str | None, detection: Detection) -> str:
    """One build-log line: which start command was chosen, and why the others were not."""
    command, source = resolve_start_command(custom, detection)
    declared = detection.declared.start
    if source is StartCommandSource.CUSTOM:
        passed = []
        if declared is not None:
            passed.append(f"{declared.location} declares `{declared.command}`")
        passed.append(
            f"autodetected `{detection.autodetected_command}`"
            if detection.autodetected_command
            else "autodetection (it found no entry point)"
        )
        return (
            f"start command (custom, saved on the project, wins over {'; '.join(passed)}): "
            f"{command}"
        )
    if declared is not None:
        return (
            f"start command ({source.value}, declared in {declared.location}; no custom command "
            f"is saved, and a declaration wins over "
            + (
                f"the autodetected `{detection.autodetected_command}`"
                if detection.autodetected_command
                else "autodetection, which found no entry point"
            )
            + f"): {command}"
        )
    return (
        "start command (autodetected: no custom command is saved and the repository declares "
        f"none in phemeral.toml, a Procfile or another platform's file): {command}"
    )
