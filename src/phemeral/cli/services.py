"""`phemeral services`: PostgreSQL and Redis for an environment, provisioned by the platform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from phemeral.cli.client import Cli, api_command, out


@click.group()
def services() -> None:
    """Backing services (PostgreSQL, Redis) of an environment."""


def _describe(s: dict[str, Any]) -> None:
    out.print(f"[bold]{s['name']}[/]  {s['kind']} of {s['project']}/{s['environment']}")
    out.print(f"  status:    {s['status']} ({s['location']})")
    out.print(f"  endpoint:  {s['host']}:{s['port']}")
    if s["kind"] == "postgres":
        out.print(f"  database:  {s['database']} (role {s['user']})")
        limit = s["connection_limit"]
        out.print(f"  connection limit: {limit if limit is not None else 'none'}")
    else:
        out.print(f"  maxmemory: {s['maxmemory_mb']} MB")
    out.print(f"  variables: {', '.join(s['variables'])}")
    if s.get("rotated_at"):
        out.print(f"  credentials rotated: {s['rotated_at']}")
    for key, value in (s.get("credentials") or {}).items():
        out.print(f"  {key}={value}")


@services.command("create")
@click.argument("kind", type=click.Choice(["postgres", "redis"]))
@click.option("--project", "-p", required=True)
@click.option("--environment", "-e", default="production", show_default=True)
@click.option("--name", help="Platform-wide unique (default: PROJECT-ENVIRONMENT-KIND).")
@click.option("--connection-limit", type=int, help="PostgreSQL: most connections at once.")
@click.option("--maxmemory", "maxmemory_mb", type=int, help="Redis: memory cap in MB.")
@api_command
def services_create(cli: Cli, kind: str, **fields: Any) -> None:
    """Create a KIND service (postgres or redis) for an environment.

    Deployments created from now on receive its variables (PostgreSQL: DATABASE_URL, PGHOST,
    PGPORT, PGUSER, PGPASSWORD, PGDATABASE; Redis: REDIS_URL).
    """
    body = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
    s = cli.api.post("/services", body)

    def human() -> None:
        out.print(f"[green]created[/] {kind} service [bold]{s['name']}[/]")
        _describe(s)
        out.print("  applies to deployments created from now on")

    cli.emit(s, human)


@services.command("list")
@click.argument("project")
@click.option("--environment", "-e", help="Only this environment's.")
@api_command
def services_list(cli: Cli, project: str, environment: str | None) -> None:
    """List the services of PROJECT."""
    data = cli.api.get(f"/projects/{project}/services", environment=environment)

    def human() -> None:
        table = Table("name", "kind", "environment", "status", "endpoint", "variables")
        for s in data["items"]:
            table.add_row(
                s["name"],
                s["kind"],
                s["environment"],
                s["status"],
                f"{s['host']}:{s['port']}",
                ", ".join(s["variables"]),
            )
        out.print(table)

    cli.emit(data, human)


@services.command("show")
@click.argument("name")
@click.option("--show-credentials", is_flag=True, help="Print the password and URLs too.")
@api_command
def services_show(cli: Cli, name: str, show_credentials: bool) -> None:
    """Show service NAME."""
    s = cli.api.get(f"/services/{name}", reveal="true" if show_credentials else None)
    cli.emit(s, lambda: _describe(s))


@services.command("set")
@click.argument("name")
@click.option("--connection-limit", type=int, help="PostgreSQL: most connections at once.")
@click.option("--maxmemory", "maxmemory_mb", type=int, help="Redis: memory cap in MB.")
@api_command
def services_set(cli: Cli, name: str, **fields: Any) -> None:
    """Change the limits of service NAME (at once, no redeploy needed)."""
    s = cli.api.patch(f"/services/{name}", {k: v for k, v in fields.items() if v is not None})
    cli.emit(s, lambda: _describe(s))


@services.group("credentials")
def credentials() -> None:
    """A service's credentials."""


@credentials.command("rotate")
@click.argument("name")
@click.option(
    "--revoke-previous",
    is_flag=True,
    help="The replaced credentials stop working at once (use when they leaked; then redeploy).",
)
@api_command
def credentials_rotate(cli: Cli, name: str, revoke_previous: bool) -> None:
    """Give service NAME new credentials; deployments created from now on receive them.

    The replaced ones keep working until the next rotation, so running deployments do too,
    unless --revoke-previous.
    """
    params = {"revoke_previous": "true"} if revoke_previous else {}
    s = cli.api.request("POST", f"/services/{name}/credentials/rotate", params=params)

    def human() -> None:
        out.print(f"[green]rotated[/] the credentials of {name}")
        out.print(f"  {s['note']}")

    cli.emit(s, human)


@services.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@api_command
def services_delete(cli: Cli, name: str, yes: bool) -> None:
    """Delete service NAME; a final backup stays in the platform's data dir."""
    if not yes and not cli.json:
        s = cli.api.get(f"/services/{name}")
        click.confirm(
            f"Delete {s['kind']} service {name} of {s['project']}/{s['environment']} "
            "(a final backup is kept)?",
            abort=True,
        )
    done = cli.api.delete(f"/services/{name}")

    def human() -> None:
        out.print(f"[green]deleted[/] service {name}")
        out.print(f"  final backup: {done['final_backup']}")
        out.print(f"  restore it with: phemeral services restore NAME {done['final_backup']}")

    cli.emit(done, human)


@services.command("backup")
@click.argument("name")
@api_command
def services_backup(cli: Cli, name: str) -> None:
    """Back up service NAME now (pg_dump custom format, or an RDB snapshot)."""
    done = cli.api.post(f"/services/{name}/backups")
    cli.emit(done, lambda: out.print(f"[green]backed up[/] {name}: {done['path']}"))


@services.command("restore")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@api_command
def services_restore(cli: Cli, name: str, file: Path) -> None:
    """Replace the data of service NAME with FILE (a backup of a service of the same kind)."""
    with file.open("rb") as data:
        done = cli.api.post(
            f"/services/{name}/restore",
            files={"file": (file.name, data, "application/octet-stream")},
        )
    cli.emit(done, lambda: out.print(f"[green]restored[/] {name} from {file}"))
