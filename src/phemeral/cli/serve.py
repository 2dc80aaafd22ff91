"""`phemeral serve`: run the platform (data plane process, control plane child)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
import uvloop

from phemeral.errors import PhemeralError
from phemeral.settings import LETSENCRYPT_STAGING, Settings, load_settings


@click.command("serve")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--base-domain", help="Domain whose subdomains reach deployments.")
@click.option("--idle-timeout", type=float, help="Seconds idle before an app scales to zero.")
@click.option("--database-url", help="postgresql+psycopg://… (default: SQLite in the data dir).")
@click.option(
    "--postgres-admin-url",
    help="postgresql://… of an existing server to provision databases into "
    "(default: a private PostgreSQL cluster in the data dir).",
)
@click.option(
    "--router-processes",
    type=int,
    help="Router processes on the public port (SO_REUSEPORT; default 1).",
)
@click.option(
    "--allow-local-repos", is_flag=True, default=None, help="Allow local paths as repositories."
)
@click.option("--https-port", type=int, help="Also serve HTTPS on this port (TLS in the router).")
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM certificate chain for the base domain (e.g. a wildcard), with --tls-key.",
)
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="Its PEM key.")
@click.option("--acme-directory", help="ACME directory URL (default: Let's Encrypt production).")
@click.option(
    "--acme-staging",
    is_flag=True,
    default=False,
    help="Use Let's Encrypt's staging directory (untrusted certificates, high rate limits).",
)
@click.option("--acme-email", help="Contact email of the ACME account.")
@click.option(
    "--acme-ca-bundle",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CA file to trust for the ACME server's own HTTPS (private or test CAs).",
)
@click.option(
    "--install-missing-python",
    is_flag=True,
    default=None,
    help="Let uv download a Python a project asks for that is not installed (off by default).",
)
@click.option(
    "--github-app-id",
    type=int,
    help="The platform's GitHub App: statuses, comments and private fetches use installation "
    "tokens (with --github-app-key-file).",
)
@click.option(
    "--github-app-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The App's private key (the .pem GitHub generated); read at start, never logged.",
)
def serve(**options: object) -> None:
    """Run the API, builder, runtime and router on one port."""
    # The data plane only: the control plane (API, store, builder) is its child process and
    # imports its own modules, so a restart answers without loading them here.
    from phemeral.dataplane.process import run_dataplane

    if options.pop("acme_staging"):
        if options.get("acme_directory"):
            click.echo("error: --acme-staging and --acme-directory exclude each other", err=True)
            sys.exit(2)
        options["acme_directory"] = LETSENCRYPT_STAGING
    try:
        settings = load_settings(overrides=options)
        configure_logging(settings)
        click.echo(f"data dir: {settings.data_dir}")
        click.echo(f"listening on http://{settings.host}:{settings.port}")
        if settings.https_port is not None:
            click.echo(f"listening on https://{settings.host}:{settings.https_port}")
        click.echo(f"dashboard: {settings.base_url}")
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(until_signalled(run_dataplane(settings)))
    except PhemeralError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)


def configure_logging(settings: Settings) -> None:
    """The platform's own log on stderr, at ``settings.log_level`` (``PHEMERAL_LOG_LEVEL``)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )


async def until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; SIGTERM and SIGINT cancel it so every part shuts down in order.

    Without this, SIGTERM would end the process at once and leave app instances behind. A
    second signal while it shuts down does not cancel the cleanup again (that would leave
    apps, mounts, network namespaces or the swap file behind): it is said on stderr, and
    SIGKILL is what forces an exit.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)

    def stop() -> None:
        if task.cancelling():
            click.echo(
                "stopping: apps, mounts and swap are being cleaned up; SIGKILL forces an exit "
                "and leaves them behind",
                err=True,
            )
            return
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
