"""The ``phemeral`` command line: one click group; each part registers its commands below."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="phemeral")
def main() -> None:
    """Phemeral: deploy Python web apps (FastAPI, Flask, Django) on your own machine."""


from phemeral.cli.detect import detect_command  # noqa: E402 - registration after the group

main.add_command(detect_command)
from phemeral.cli import control  # noqa: E402 - projects, environments, deployments, serve, …

control.register(main)
from phemeral.cli.deploy import deploy_command  # noqa: E402 - registration after the group

main.add_command(deploy_command)
from phemeral.cli.previews import previews  # noqa: E402 - registration after the group

main.add_command(previews)

__all__ = ["main"]
