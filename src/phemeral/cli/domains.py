"""`phemeral domains`: attach custom domains to environments and follow their certificates."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from phemeral.cli.client import Cli, api_command, out

CERT_STYLE = {
    "valid": "green",
    "renewing": "cyan",
    "pending": "yellow",
    "renewal-failing": "yellow",
    "failed": "red",
    "expired": "red",
}


@click.group()
def domains() -> None:
    """Custom domains (full host names) and their HTTPS certificates."""


def _certificate_lines(d: dict[str, Any]) -> list[str]:
    cert = d["certificate"]
    style = CERT_STYLE.get(cert["state"], "white")
    lines = [f"  certificate: [{style}]{cert['state']}[/]"]
    if cert["not_after"]:
        lines.append(f"  valid until: {cert['not_after']}")
    if cert["last_error"]:
        lines.append(f"  last error: {escape(cert['last_error'])}")
    if cert["next_try_at"]:
        lines.append(f"  next try: {cert['next_try_at']}")
    if cert["warning"]:
        lines.append(f"  [yellow]warning:[/] {escape(cert['warning'])}")
    return lines


@domains.command("add")
@click.argument("domain")
@click.option("--project", "-p", required=True)
@click.option("--environment", "-e", default="production", show_default=True)
@api_command
def domains_add(cli: Cli, domain: str, project: str, environment: str) -> None:
    """Attach DOMAIN to an environment; print the DNS record to create."""
    d = cli.api.post("/domains", {"name": domain, "project": project, "environment": environment})

    def human() -> None:
        out.print(f"[green]attached[/] {d['name']} to {d['project']}/{d['environment']}")
        dns = d["dns"]
        out.print("create this DNS record (or an A/AAAA record to this server's address):")
        out.print(f"  {dns['name']}.  {dns['type']}  {dns['value']}.")
        out.print(
            "a certificate is requested over HTTP-01 once the name reaches this server on port 80"
        )
        for line in _certificate_lines(d):
            out.print(line)

    cli.emit(d, human)


@domains.command("remove")
@click.argument("domain")
@api_command
def domains_remove(cli: Cli, domain: str) -> None:
    """Detach DOMAIN: it stops routing and its certificate is no longer served."""
    cli.api.delete(f"/domains/{domain}")
    cli.emit({"removed": domain}, lambda: out.print(f"[green]removed[/] {domain}"))


@domains.command("list")
@click.argument("project", required=False)
@api_command
def domains_list(cli: Cli, project: str | None) -> None:
    """List custom domains (of PROJECT) with their certificate state."""
    data = cli.api.get("/domains", project=project)

    def human() -> None:
        table = Table(
            "domain", "environment", "certificate", "valid until", "last error", "next try"
        )
        for d in data["items"]:
            cert = d["certificate"]
            style = CERT_STYLE.get(cert["state"], "white")
            table.add_row(
                d["name"],
                f"{d['project']}/{d['environment']}",
                f"[{style}]{cert['state']}[/]",
                cert["not_after"] or "—",
                escape(cert["last_error"] or "—"),
                cert["next_try_at"] or "—",
            )
        out.print(table)

    cli.emit(data, human)


@domains.command("show")
@click.argument("domain")
@api_command
def domains_show(cli: Cli, domain: str) -> None:
    """Show DOMAIN and its certificate."""
    d = cli.api.get(f"/domains/{domain}")

    def human() -> None:
        out.print(f"[bold]{d['name']}[/] → {d['project']}/{d['environment']}")
        for line in _certificate_lines(d):
            out.print(line)

    cli.emit(d, human)


@domains.command("renew")
@click.argument("domain")
@api_command
def domains_renew(cli: Cli, domain: str) -> None:
    """Order a new certificate for DOMAIN now (the current one serves until replaced)."""
    d = cli.api.post(f"/domains/{domain}/renew")
    cli.emit(d, lambda: out.print(f"renewal of {domain} requested"))
