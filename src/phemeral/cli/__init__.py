"""The ``phemeral`` command line: one click group; each part registers its commands below.

`phemeral serve` loads only its own module: the API client commands (httpx, rich) are
registered the first time any other command, or the command list, is asked for, so a
restarting platform does not pay for them.
"""

from __future__ import annotations

import click


class _Commands(click.Group):
    """`serve` at once; every other command registered on first use."""

    _registered = False

    def _register_all(self) -> None:
        if self._registered:
            return
        self._registered = True
        from phemeral.cli import control
        from phemeral.cli.deploy import deploy_command
        from phemeral.cli.detect import detect_command
        from phemeral.cli.previews import previews

        self.add_command(detect_command)
        control.register(self)
        self.add_command(deploy_command)
        self.add_command(previews)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "serve" and "serve" not in self.commands:
            from phemeral.cli.serve import serve

            self.add_command(serve)
        if cmd_name not in self.commands:
            self._register_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register_all()
        return super().list_commands(ctx)


@click.group(cls=_Commands)
@click.version_option(package_name="phemeral")
def main() -> None:
    """Phemeral: deploy Python web apps (FastAPI, Flask, Django) on your own machine."""


__all__ = ["main"]
