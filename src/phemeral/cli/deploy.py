"""``phemeral deploy``: pack a folder, upload it, and follow its build live.

When the project exists and sets ``root_dir`` (a monorepo), only what that folder's build needs
is uploaded (`phemeral.build.scope`), not the whole checkout.

Exit status: 0 when the deployment ends ``successful`` (or, with ``--no-wait``, was accepted),
1 when it ends ``failed``.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from phemeral.build.archive import pack
from phemeral.cli.client import Cli, api_command, err, out, status_text
from phemeral.errors import InvalidInput, NotFound

POLL_SECONDS = 0.5


def project_name_for(path: Path) -> str:
    """A valid project name from a folder name: ``My_App`` → ``my-app`` (pure)."""
    name = re.sub(r"[^a-z0-9]+", "-", path.name.lower()).strip("-")
    if not name:
        raise InvalidInput(f"cannot derive a project name from {path}; pass --project NAME")
    if not name[0].isalpha():
        name = f"app-{name}"
    return name[:40].rstrip("-")


@click.command("deploy")
@click.argument(
    "path",
    required=False,
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--project", "project", help="Project name (default: the folder's name).")
@click.option("--environment", default="production", show_default=True)
@click.option("--no-promote", is_flag=True, help="Do not make it current when it succeeds.")
@click.option("--no-wait", is_flag=True, help="Return once uploaded; do not follow the build.")
@api_command
def deploy_command(
    cli: Cli, path: Path, project: str | None, environment: str, no_promote: bool, no_wait: bool
) -> None:
    """Deploy the project in PATH (default: the current folder)."""
    root = path.resolve()
    name = project or project_name_for(root)
    try:
        root_dir = cli.api.get(f"/projects/{name}").get("root_dir") or None
    except NotFound:
        root_dir = None
    with tempfile.TemporaryDirectory(prefix="phemeral-deploy-") as tmp:
        archive = Path(tmp) / "source.tar.gz"
        started = time.monotonic()
        stats = pack(root, archive, root_dir=root_dir)
        if not cli.json:
            size = archive.stat().st_size
            scope = f" (root dir {root_dir} and what its build needs)" if root_dir else ""
            err.print(
                f"[dim]packed {stats.describe()} from {root}{scope} "
                f"({size / 1024:.0f} KiB compressed)[/]"
            )
        with archive.open("rb") as handle:
            deployment = cli.api.post(
                f"/projects/{name}/deployments",
                files={"archive": ("source.tar.gz", handle, "application/gzip")},
                data={
                    "environment": environment,
                    "promote": "false" if no_promote else "true",
                    "create_project": "true",
                },
            )
    deployment_id = deployment["id"]
    if not cli.json:
        err.print(f"deployment [bold]{deployment_id}[/] created for {name}/{environment}")
    if not no_wait:
        _follow(cli, deployment_id)
        deployment = cli.api.get(f"/deployments/{deployment_id}")
    deployment.setdefault("project", name)
    deployment.setdefault("environment", environment)
    deployment["elapsed_seconds"] = round(time.monotonic() - started, 2)
    cli.emit(deployment, lambda: _summary(deployment))
    if not no_wait and deployment.get("status") != "successful":
        sys.exit(1)


def _follow(cli: Cli, deployment_id: str) -> None:
    """Stream the build log until the server says the build ended."""
    for event, data in cli.api.events(f"/deployments/{deployment_id}/logs/build/stream"):
        if event == "end":
            return
        if not cli.json and isinstance(data, dict):
            _print_line(data)
    # the stream closed without its end event: wait for the status instead
    while cli.api.get(f"/deployments/{deployment_id}")["status"] == "building":
        time.sleep(POLL_SECONDS)


def _print_line(line: dict[str, Any]) -> None:
    when = str(line.get("timestamp", ""))[11:23]
    stage = escape(str(line.get("stage", "")))
    message = escape(str(line.get("message", "")))
    if message.startswith("build failed"):
        message = f"[red]{message}[/]"
    out.print(f"[dim]{when}[/] [cyan]{stage:>8}[/] {message}")


def _summary(d: dict[str, Any]) -> None:
    out.print(f"id      {d['id']}")
    out.print(f"status  {status_text(str(d.get('status')), bool(d.get('is_current')))}")
    if d.get("url"):
        out.print(f"url     {d['url']}")
    if d.get("failure_reason"):
        out.print(f"reason  [red]{escape(str(d['failure_reason']))}[/]")
