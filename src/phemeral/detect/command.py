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


def resolve_start_command(
    custom: str | None, detection: Detection
) -> tuple[str, StartCommandSource]:
    """A saved custom command wins; otherwise the autodetected default (pure)."""
    if custom is not None and custom.strip():
        return custom.strip(), StartCommandSource.CUSTOM
    return detection.start_command, StartCommandSource.AUTODETECTED
