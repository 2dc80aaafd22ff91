"""Commands that manage projects, environments, deployments, variables and logs over the API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from phemeral.cli.client import Cli, api_command, out, status_text
from phemeral.cli.domains import domains
from phemeral.cli.serve import serve
from phemeral.errors import InvalidInput, PhemeralError

PROJECTS_PAGE = 500  # the API's largest page: one request for most installations


def register(main: click.Group) -> None:
    from phemeral.cli.services import services

    for command in (
        projects,
        environments,
        deployments,
        promote,
        logs,
        env,
        serve,
        services,
        domains,
    ):
        main.add_command(command)


# ── projects ─────────────────────────────────────────────────────────────────────────────────


@click.group()
def projects() -> None:
    """Create, inspect, change and delete projects."""


@projects.command("create")
@click.argument("name")
@click.option("--repo", "repo_url", help="Git repository URL (push to deploy).")
@click.option("--root-dir", help="Project root inside the repository.")
@click.option("--start-command", help="Custom start command (default: autodetected).")
@click.option("--python", "python_version", help="Python version override, e.g. 3.12.")
@click.option("--package-manager", type=click.Choice(["uv", "poetry", "pip"]))
@click.option("--webhook-secret", help="GitHub webhook secret (generated when not given).")
@click.option("--branch", default="main", show_default=True, help="Branch of `production`.")
@click.option("--build-timeout", type=int, help="Seconds a build may take (default: the server's).")
@api_command
def projects_create(cli: Cli, name: str, **fields: Any) -> None:
    """Create project NAME with its `production` environment."""
    body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    project = cli.api.post("/projects", body)
    webhook = cli.api.get(f"/projects/{name}/webhook")

    def human() -> None:
        out.print(f"[green]created[/] project [bold]{name}[/] (app uid {project['uid']})")
        for e in project["environments"]:
            urls = ", ".join(d["url"] for d in e["domains"])
            out.print(f"  environment {e['name']}: {urls}")
        out.print(f"  GitHub webhook: {webhook['url']}")
        out.print(f"  webhook secret (shown once): {project['webhook_secret']}")

    cli.emit(project, human)


@projects.command("list")
@api_command
def projects_list(cli: Cli) -> None:
    """List projects (all of them: every page of the API's list, by name)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = cli.api.get("/projects", cursor=cursor, limit=PROJECTS_PAGE)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    data = {"items": items}

    def human() -> None:
        table = Table("name", "environments", "repository", "start command")
        for p in data["items"]:
            envs = ", ".join(e["name"] for e in p["environments"])
            table.add_row(p["name"], envs, p["repo_url"] or "—", p["start_command"] or "(auto)")
        out.print(table)

    cli.emit(data, human)


@projects.command("show")
@click.argument("name")
@api_command
def projects_show(cli: Cli, name: str) -> None:
    """Show project NAME: settings, environments, domains, current deployments."""
    p = cli.api.get(f"/projects/{name}")

    def human() -> None:
        out.print(f"[bold]{p['name']}[/]  (app uid {p['uid']})")
        out.print(f"  repository:    {p['repo_url'] or '—'}")
        out.print(f"  root dir:      {p['root_dir'] or '(autodetected)'}")
        out.print(f"  start command: {p['start_command'] or '(autodetected)'}")
        out.print(f"  python:        {p['python_version'] or '(autodetected)'}")
        out.print(f"  github:        {_github_credential(p)}")
        for e in p["environments"]:
            out.print(f"  environment [bold]{e['name']}[/] branches={','.join(e['branches'])}")
            out.print(f"    current: {e['current_deployment_id'] or '—'}")
            for d in e["domains"]:
                out.print(f"    {d['url']}")

    cli.emit(p, human)


def _github_credential(p: dict[str, Any]) -> str:
    """Where the project's GitHub token comes from (what `phemeral.deploys.github_auth` picks)."""
    app = p.get("github_app")
    installation = (app or {}).get("installation_id") or "asked of GitHub"
    if app and app["source"] == "project":
        return f"GitHub App {app['app_id']} (its own), installation {installation}"
    if p.get("has_repo_token"):
        return "access token"
    if app:
        return f"the server's GitHub App {app['app_id']}, installation {installation}"
    return "none (no commit statuses, public repositories only)"


@projects.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@api_command
def projects_delete(cli: Cli, name: str, yes: bool) -> None:
    """Delete project NAME and all its deployments."""
    services = [s["name"] for s in cli.api.get(f"/projects/{name}/services")["items"]]
    if not yes and not cli.json:
        also = f" and its services {', '.join(services)} (each keeps a final backup)"
        click.confirm(
            f"Delete project {name} and every deployment of it{also if services else ''}?",
            abort=True,
        )
    done = cli.api.request("DELETE", f"/projects/{name}", params={"delete_services": "true"})

    def human() -> None:
        out.print(f"[green]deleted[/] project {name}")
        for svc in done["services"]:
            out.print(f"  service {svc['name']}: final backup {svc['final_backup']}")

    cli.emit(done, human)


@projects.command("set")
@click.argument("name")
@click.option("--start-command", help="Custom start command for new deployments.")
@click.option("--clear-start-command", is_flag=True, help="New deployments use the default.")
@click.option("--root-dir")
@click.option("--python", "python_version")
@click.option("--package-manager", type=click.Choice(["uv", "poetry", "pip"]))
@click.option("--repo", "repo_url")
@click.option("--webhook-secret")
@click.option("--repo-token", help="Access token for a private repository (stored encrypted).")
@click.option("--clear-repo-token", is_flag=True, help="Forget the access token.")
@click.option("--build-timeout", type=int, help="Seconds a build may take.")
@click.option(
    "--github-app-id",
    help="The project's own GitHub App (with --github-app-key-file): statuses, comments and "
    "private fetches use its installation tokens.",
)
@click.option(
    "--github-app-key-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The App's private key (.pem); sent once, stored encrypted, never shown.",
)
@click.option(
    "--github-installation-id",
    help="The App's installation on the repository (default: asked of GitHub).",
)
@click.option(
    "--clear-github-app", is_flag=True, help="Forget the project's App, key and installation."
)
@api_command
def projects_set(
    cli: Cli,
    name: str,
    clear_start_command: bool,
    clear_repo_token: bool,
    clear_github_app: bool,
    github_app_key_file: Path | None,
    **fields: Any,
) -> None:
    """Change project settings; start-command changes apply to new deployments only."""
    body = {k: v for k, v in fields.items() if v is not None}
    if clear_start_command:
        if "start_command" in body:
            raise InvalidInput("use either --start-command or --clear-start-command")
        body["start_command"] = None
    if clear_repo_token:
        if "repo_token" in body:
            raise InvalidInput("use either --repo-token or --clear-repo-token")
        body["repo_token"] = None
    if github_app_key_file is not None:
        try:
            body["github_app_key"] = github_app_key_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{github_app_key_file} cannot be read as a PEM file") from exc
    if clear_github_app:
        app = {"github_app_id", "github_app_key", "github_installation_id"}
        if app & set(body):
            raise InvalidInput("use either the --github-app-* options or --clear-github-app")
        body |= dict.fromkeys(app)
    if not body:
        raise InvalidInput("nothing to change: pass at least one option (see --help)")
    p = cli.api.patch(f"/projects/{name}", body)

    def human() -> None:
        out.print(f"[green]updated[/] {name}: {', '.join(sorted(body))}")
        if "start_command" in body:
            out.print("  the start command applies to new deployments; existing ones keep theirs")

    cli.emit(p, human)


# ── environments ────────────────────────────────────────────────────────────────────────────


@click.group()
def environments() -> None:
    """Environments of a project (production, staging, previews…)."""


@environments.command("create")
@click.argument("project")
@click.argument("name")
@click.option("--branch", "branches", multiple=True, help="Branch deployed here (repeatable).")
@click.option("--domain", "domains", multiple=True, help="Extra subdomain (repeatable).")
@click.option(
    "--copy-services-from",
    metavar="ENV",
    help="Give it a service of each kind ENV (e.g. production) has.",
)
@click.option(
    "--with-data/--empty",
    default=False,
    show_default=True,
    help="With --copy-services-from: copy schema and data, or start empty.",
)
@api_command
def environments_create(
    cli: Cli,
    project: str,
    name: str,
    branches: tuple[str, ...],
    domains: tuple[str, ...],
    copy_services_from: str | None,
    with_data: bool,
) -> None:
    """Create environment NAME in PROJECT."""
    body: dict[str, Any] = {"name": name, "branches": list(branches), "domains": list(domains)}
    if copy_services_from:
        body |= {"copy_services_from": copy_services_from, "copy_data": with_data}
    e = cli.api.post(f"/projects/{project}/environments", body)

    def human() -> None:
        out.print(f"[green]created[/] environment {project}/{name}")
        for d in e["domains"]:
            out.print(f"  {d['url']}")
        for svc in e.get("copied_services", []):
            out.print(
                f"  service {svc['name']} ({svc['kind']}) from {svc['from']}: {svc['contents']}"
            )

    cli.emit(e, human)


@environments.command("set")
@click.argument("project")
@click.argument("name")
@click.option("--branch", "branches", multiple=True, help="Replaces the mapped branches.")
@click.option("--no-branches", is_flag=True, help="Map no branch (pushes deploy nothing here).")
@click.option("--domain", "domains", multiple=True, help="Replaces the custom subdomains.")
@click.option("--no-domains", is_flag=True, help="Remove every custom subdomain.")
@click.option(
    "--https-redirect/--no-https-redirect",
    default=None,
    help="Redirect plain HTTP to HTTPS (308) once a host has a valid certificate (default on).",
)
@click.option("--hsts", "hsts_max_age", type=int, help="HSTS max-age in seconds (0: off).")
@api_command
def environments_set(
    cli: Cli,
    project: str,
    name: str,
    branches: tuple[str, ...],
    no_branches: bool,
    domains: tuple[str, ...],
    no_domains: bool,
    https_redirect: bool | None,
    hsts_max_age: int | None,
) -> None:
    """Change the branches, subdomains or HTTPS settings of environment NAME."""
    body: dict[str, Any] = {}
    if branches or no_branches:
        body["branches"] = list(branches)
    if domains or no_domains:
        body["domains"] = list(domains)
    if https_redirect is not None:
        body["https_redirect"] = https_redirect
    if hsts_max_age is not None:
        body["hsts_max_age"] = hsts_max_age
    if not body:
        raise InvalidInput(
            "nothing to change: pass --branch/--no-branches, --domain/--no-domains, "
            "--https-redirect/--no-https-redirect or --hsts"
        )
    e = cli.api.patch(f"/projects/{project}/environments/{name}", body)
    cli.emit(e, lambda: out.print(f"[green]updated[/] environment {project}/{name}"))


@environments.command("delete")
@click.argument("project")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@api_command
def environments_delete(cli: Cli, project: str, name: str, yes: bool) -> None:
    """Delete environment NAME of PROJECT, its deployments and its services."""
    listed = cli.api.get(f"/projects/{project}/services", environment=name)["items"]
    services = [s["name"] for s in listed]
    if not yes and not cli.json:
        also = f" and its services {', '.join(services)} (each keeps a final backup)"
        click.confirm(
            f"Delete environment {project}/{name}, its deployments{also if services else ''}?",
            abort=True,
        )
    params = {"delete_services": "true"} if (yes or services) else {}
    done = cli.api.request("DELETE", f"/projects/{project}/environments/{name}", params=params)

    def human() -> None:
        out.print(f"[green]deleted[/] environment {project}/{name}")
        for svc in done["services"]:
            out.print(f"  service {svc['name']}: final backup {svc['final_backup']}")

    cli.emit(done, human)


@environments.command("list")
@click.argument("project")
@api_command
def environments_list(cli: Cli, project: str) -> None:
    """List the environments of PROJECT."""
    data = cli.api.get(f"/projects/{project}/environments")

    def human() -> None:
        table = Table("name", "branches", "current", "domains")
        for e in data["items"]:
            table.add_row(
                e["name"],
                ", ".join(e["branches"]) or "—",
                e["current_deployment_id"] or "—",
                "\n".join(d["url"] for d in e["domains"]),
            )
        out.print(table)

    cli.emit(data, human)


# ── deployments ─────────────────────────────────────────────────────────────────────────────


@click.group()
def deployments() -> None:
    """List and inspect deployments."""


@deployments.command("list")
@click.argument("project")
@click.option("--environment", "-e")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
@api_command
def deployments_list(
    cli: Cli, project: str, environment: str | None, limit: int, cursor: str | None
) -> None:
    """Deployments of PROJECT, newest first."""
    data = cli.api.get(
        f"/projects/{project}/deployments", environment=environment, limit=limit, cursor=cursor
    )

    def human() -> None:
        table = Table("id", "env", "status", "trigger", "commit", "created")
        for d in data["items"]:
            trig = d["trigger"]
            label = f"push {trig['branch']}" if trig["kind"] == "push" else "manual"
            table.add_row(
                d["id"],
                d["environment"],
                status_text(d["status"], d["is_current"]),
                label,
                (d["commit"] or "")[:10] or "—",
                d["created_at"][:19].replace("T", " "),
            )
        out.print(table)
        if data["next_cursor"]:
            out.print(f"more: --cursor {data['next_cursor']}")

    cli.emit(data, human)


@deployments.command("show")
@click.argument("deployment_id")
@api_command
def deployments_show(cli: Cli, deployment_id: str) -> None:
    """Show one deployment (status, URL, start command and where it came from…)."""
    d = cli.api.get(f"/deployments/{deployment_id}")

    def human() -> None:
        out.print(f"[bold]{d['id']}[/]  {d['project']}/{d['environment']}  ", end="")
        out.print(status_text(d["status"], d["is_current"]))
        if d["failure_reason"]:
            out.print(f"  reason:  [red]{escape(d['failure_reason'])}[/]")
        out.print(f"  url:     {d['url']}")
        out.print(f"  trigger: {d['trigger']['kind']} {d['commit'] or ''}".rstrip())
        source = d["start_command_source"] or "pending"
        command = escape(d["start_command"] or "(decided by the build)")
        out.print(f"  command: {command} ({source})")
        inst = d["instances"]
        out.print(f"  process: {inst['state']} ({inst['instances']} running)")
        if d.get("release_command"):
            out.print(f"  release: {escape(d['release_command'])}")
        for proc in d.get("processes") or []:
            extra = f", {proc['restarts']} restarts" if proc["restarts"] else ""
            last = f", last: {escape(proc['last_exit'])}" if proc["last_exit"] else ""
            out.print(f"  {proc['name']}: {escape(proc['command'])} ({proc['state']}{extra}{last})")
        out.print(f"  created: {d['created_at']}  finished: {d['finished_at'] or '—'}")
        if d.get("pinned"):
            out.print("  pinned:  kept by release retention")
        if d.get("collected_at"):
            out.print(f"  release collected by retention at {d['collected_at']}")

    cli.emit(d, human)


@deployments.command("pin")
@click.argument("deployment_id")
@api_command
def deployments_pin(cli: Cli, deployment_id: str) -> None:
    """Keep DEPLOYMENT_ID's release whatever its age (release retention skips it)."""
    d = cli.api.patch(f"/deployments/{deployment_id}", {"pinned": True})
    cli.emit(d, lambda: out.print(f"[green]pinned[/] {deployment_id}"))


@deployments.command("unpin")
@click.argument("deployment_id")
@api_command
def deployments_unpin(cli: Cli, deployment_id: str) -> None:
    """Let release retention collect DEPLOYMENT_ID again once it is old enough."""
    d = cli.api.patch(f"/deployments/{deployment_id}", {"pinned": False})
    cli.emit(d, lambda: out.print(f"[green]unpinned[/] {deployment_id}"))


@click.command()
@click.argument("deployment_id")
@click.option("--reason", help="Why (kept in the environment's history).")
@api_command
def promote(cli: Cli, deployment_id: str, reason: str | None) -> None:
    """Make DEPLOYMENT_ID the current deployment of its environment (also: rollback)."""
    d = cli.api.post(f"/deployments/{deployment_id}/promote", {"reason": reason})
    move = d["promotion"]
    cli.emit(
        d,
        lambda: out.print(
            f"[green]{d['environment']}[/] now serves {move['to']} (was {move['from'] or '—'})"
        ),
    )


# ── logs ────────────────────────────────────────────────────────────────────────────────────


@click.command()
@click.argument("deployment_id")
@click.option("--build", "kind", flag_value="build", default=True, help="Build log (default).")
@click.option("--runtime", "kind", flag_value="runtime", help="Runtime log of the app.")
@click.option("--limit", type=int, help="Lines per page.")
@click.option("--cursor", help="Continue from a previous page's cursor.")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new lines.")
@click.option("--stream", "stream_name", help="Runtime only: stdout, stderr, router, system.")
@api_command
def logs(
    cli: Cli,
    deployment_id: str,
    kind: str,
    limit: int | None,
    cursor: str | None,
    follow: bool,
    stream_name: str | None,
) -> None:
    """Print the build or runtime log of DEPLOYMENT_ID.

    With --follow --build, the exit code is 0 if the deployment succeeded and 1 if it failed.
    """
    base = f"/deployments/{deployment_id}/logs/{kind}"
    if follow:
        _follow(cli, base, kind, stream_name)
        return
    params: dict[str, Any] = {"limit": limit, "cursor": cursor}
    if kind == "runtime":
        params["stream"] = stream_name
    page = cli.api.get(base, **params)
    lines = page["lines"] if kind == "build" else list(reversed(page["lines"]))

    def human() -> None:
        for line in lines:
            _print_line(line, kind)
        if page["next_cursor"] and kind == "runtime":
            out.print(f"[dim]older: --cursor {page['next_cursor']}[/]")

    cli.emit(page, human)


def _follow(cli: Cli, base: str, kind: str, stream_name: str | None) -> None:
    params = {"stream": stream_name} if kind == "runtime" else {}
    for event, data in cli.api.events(base + "/stream", **params):
        if event == "end":
            status = data["status"]
            if not cli.json:
                out.print(f"deployment {status_text(status)}")
            if status != "successful":
                raise PhemeralError(f"the deployment {status}")
            return
        if cli.json:
            click.echo(json.dumps(data))
        else:
            _print_line(data, kind)


def _print_line(line: dict[str, Any], kind: str) -> None:
    when = line["timestamp"][11:23]
    tag = line["stage"] if kind == "build" else line["stream"]
    failed = kind == "build" and line["message"].startswith("failed")
    message = escape(line["message"])
    text = f"[red]{message}[/]" if failed else message
    out.print(f"[dim]{when}[/] [cyan]{escape(tag):>8}[/] {text}")


# ── environment variables ───────────────────────────────────────────────────────────────────


@click.group()
def env() -> None:
    """Environment variables (apply to deployments created afterwards)."""


@env.command("set")
@click.argument("project")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--environment", "-e", default="production", show_default=True)
@click.option("--secret", is_flag=True, help="Write-only: the value is never shown again.")
@api_command
def env_set(
    cli: Cli, project: str, assignments: tuple[str, ...], environment: str, secret: bool
) -> None:
    """Set KEY=VALUE pairs on PROJECT's environment."""
    # Imported here: the store package pulls in the database layer, which no other command needs.
    from phemeral.store.variables import parse_assignment

    values = dict(parse_assignment(a) for a in assignments)
    data = cli.api.post(
        f"/projects/{project}/environments/{environment}/variables",
        {"values": values, "secret": secret},
    )
    cli.emit(data, lambda: out.print(f"[green]set[/] {', '.join(data['set'])} ({data['note']})"))


@env.command("unset")
@click.argument("project")
@click.argument("keys", nargs=-1, required=True)
@click.option("--environment", "-e", default="production", show_default=True)
@api_command
def env_unset(cli: Cli, project: str, keys: tuple[str, ...], environment: str) -> None:
    """Remove variables KEYS from PROJECT's environment."""
    data = cli.api.post(
        f"/projects/{project}/environments/{environment}/variables/unset", {"keys": list(keys)}
    )
    cli.emit(data, lambda: out.print(f"[green]unset[/] {', '.join(data['unset'])}"))


@env.command("list")
@click.argument("project")
@click.option("--environment", "-e", default="production", show_default=True)
@api_command
def env_list(cli: Cli, project: str, environment: str) -> None:
    """List variables (secret values masked), with where each comes from: set by you, or
    provided by a backing service (a variable you set wins over a service's)."""
    data = cli.api.get(f"/projects/{project}/environments/{environment}/variables")

    def human() -> None:
        table = Table("key", "value", "secret", "source")
        for v in data["items"]:
            source = v.get("source", "user")
            if v.get("overrides"):
                source += f" (overrides {v['overrides']})"
            table.add_row(v["key"], v["value"], "yes" if v["secret"] else "", source)
        out.print(table)

    cli.emit(data, human)


def wait_for(cli: Cli, deployment_id: str, timeout: float = 900.0) -> dict[str, Any]:
    """Poll until the deployment leaves `building` (for scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = cli.api.get(f"/deployments/{deployment_id}")
        if d["status"] != "building" or time.monotonic() > deadline:
            return d
        time.sleep(0.5)
