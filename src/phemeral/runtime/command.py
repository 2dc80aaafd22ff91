"""Reading an autodetected default command: what runs before the server, and the server argv.

``python manage.py migrate && gunicorn --bind 0.0.0.0:$PORT mysite.wsgi`` becomes the
pre-commands ``["python manage.py migrate"]`` and the server argv ``["gunicorn", "--bind",
"0.0.0.0:8000", "mysite.wsgi"]`` ($PORT expanded; the bind itself is replaced by the socket the
runtime passes). Anything the template cannot reproduce exactly (pipes, ``;``, ``||``,
redirections, other servers, ``--reload``, ``--uds``/``--fd``) gives None: such a command runs
as given, as custom commands do.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePath

_PORT = re.compile(r"\$\{PORT(?::-[^}]*)?\}|\$PORT\b")
_UNSUPPORTED = ("--reload", "--uds", "--fd", "--daemon", "-D", "--paste", "--pid", "-p")


@dataclass(frozen=True)
class ServerCommand:
    pre_commands: tuple[str, ...]  # shell commands to run (in order) before the server starts
    argv: tuple[str, ...]  # the server's own argv, program name first (``uvicorn`` / ``gunicorn``)
    server: str


def parse_server_command(command: str, port: int) -> ServerCommand | None:
    """Split ``pre && … && server args`` (``$PORT`` expanded); None when it is not that shape."""
    parts = [p.strip() for p in command.split("&&")]
    if not parts or any(not p for p in parts):
        return None
    last = _PORT.sub(str(port), parts[-1])
    if any(ch in last for ch in "|;<>`$&"):
        return None
    try:
        argv = shlex.split(last)
    except ValueError:
        return None
    argv = _strip_launcher(argv)
    if not argv:
        return None
    server = PurePath(argv[0]).name
    if server not in ("uvicorn", "gunicorn"):
        return None
    if any(a in _UNSUPPORTED or a.split("=", 1)[0] in _UNSUPPORTED for a in argv[1:]):
        return None
    return ServerCommand(tuple(parts[:-1]), (server, *argv[1:]), server)


def _strip_launcher(argv: list[str]) -> list[str]:
    """``python -m uvicorn …`` / ``exec gunicorn …`` → ``uvicorn …`` / ``gunicorn …``."""
    if argv and argv[0] == "exec":
        argv = argv[1:]
    if len(argv) >= 3 and PurePath(argv[0]).name.startswith("python") and argv[1] == "-m":
        return argv[2:]
    return argv
