"""``phemeral previews``: pull-request previews and their variable set."""

from __future__ import annotations

import click
from rich.table import Table

from phemeral.cli.client import Cli, api_command, out


@click.group()
def previews() -> None:
    """Pull-request previews (environments pr-NUMBER, one per open pull request)."""


@previews.command("list")
@click.argument("project")
@api_command
def previews_list(cli: Cli, project: str) -> None:
    """List PROJECT's previews."""
    data = cli.api.get(f"/projects/{project}/previews")

    def human() -> None:
        table = Table("pr", "state", "url", "head", "fork", "current")
        for p in data["items"]:
            fork = ("approved" if p["approved_by"] else "no secrets") if p["fork"] else ""
            table.add_row(
                f"#{p['number']}",
                p["state"],
                p["url"] or "—",
                (p["head_sha"] or "")[:12],
                fork,
                p["current_deployment_id"] or "—",
            )
        out.print(table)

    cli.emit(data, human)


@previews.command("approve")
@click.argument("project")
@click.argument("number", type=int)
@click.option(
    "--no-redeploy", is_flag=True, help="Only approve; the next push builds with secrets."
)
@api_command
def previews_approve(cli: Cli, project: str, number: int, no_redeploy: bool) -> None:
    """Let pull request NUMBER (from a fork) receive the preview variables."""
    data = cli.api.post(
        f"/projects/{project}/previews/{number}/approve", {"redeploy": not no_redeploy}
    )
    cli.emit(
        data,
        lambda: out.print(
            f"[green]approved[/] #{number}"
            + (f"; building {data['deployment']}" if data["deployment"] else "")
        ),
    )


@previews.command("set")
@click.argument("project")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--secret", is_flag=True, help="Write-only: the value is never shown again.")
@api_command
def previews_set(cli: Cli, project: str, assignments: tuple[str, ...], secret: bool) -> None:
    """Set KEY=VALUE pairs on PROJECT's preview variable set."""
    from phemeral.store.variables import parse_assignment

    values = dict(parse_assignment(a) for a in assignments)
    data = cli.api.post(
        f"/projects/{project}/preview-variables", {"values": values, "secret": secret}
    )
    cli.emit(data, lambda: out.print(f"[green]set[/] {', '.join(data['set'])} ({data['note']})"))


@previews.command("unset")
@click.argument("project")
@click.argument("keys", nargs=-1, required=True)
@api_command
def previews_unset(cli: Cli, project: str, keys: tuple[str, ...]) -> None:
    """Remove KEYS from PROJECT's preview variable set."""
    data = cli.api.post(f"/projects/{project}/preview-variables/unset", {"keys": list(keys)})
    cli.emit(data, lambda: out.print(f"[green]unset[/] {', '.join(data['unset'])}"))
