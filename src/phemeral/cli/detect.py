"""``phemeral detect PATH [--json]``: show how a project would be built and run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from phemeral.errors import PhemeralError


def _available_versions() -> list[str]:
    try:
        from phemeral.build.interpreters import discover_pythons
    except ImportError:  # the builder is not installed: detection still works on its defaults
        return []
    return [interpreter.minor for interpreter in discover_pythons()]


@click.command("detect")
@click.argument("path", type=click.Path(path_type=Path), default=Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--root-dir", default=None, help="Project folder inside PATH (overrides detection).")
@click.option("--python", "python_version", default=None, help="Python version to use, e.g. 3.12.")
@click.option(
    "--package-manager",
    type=click.Choice(["uv", "poetry", "pip"]),
    default=None,
    help="Package manager to use (overrides detection).",
)
def detect_command(
    path: Path,
    as_json: bool,
    root_dir: str | None,
    python_version: str | None,
    package_manager: str | None,
) -> None:
    """Detect the Python version, package manager, framework, entry point and start command."""
    from phemeral.detect import detect
    from phemeral.models import ProjectOverrides

    overrides = ProjectOverrides(
        root_dir=root_dir, python_version=python_version, package_manager=package_manager
    )
    try:
        if not path.is_dir():
            raise PhemeralError(f"{path} is not a directory.")
        detection = detect(path, overrides=overrides, available_versions=_available_versions())
    except PhemeralError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(detection.to_json(), indent=2))
    else:
        click.echo(detection.summary())
