"""Reading a start command: what runs before the server, and the server's own argv.

``python manage.py migrate && gunicorn --bind 0.0.0.0:$PORT mysite.wsgi`` becomes the
pre-commands ``["python manage.py migrate"]`` and the server argv ``["gunicorn", "--bind",
"0.0.0.0:8000", "mysite.wsgi"]``. Variables are expanded from the app's environment as its shell
would (``$PORT``, ``${PORT:-8000}``, ``$WEB_CONCURRENCY``); the bind itself is replaced by the
socket the runtime passes. Leading ``cd DIR &&`` steps, ``VAR=value`` prefixes, ``exec`` and
``python -m`` launchers are understood. This applies to every command, autodetected, declared
(Procfile, config files) or custom: a gunicorn or uvicorn command line with its options wakes
through the template. Anything the template cannot reproduce exactly (pipes, ``;``, ``||``,
redirections, other programs, ``--reload``, ``--uds``/``--fd``, a variable that is not set)
gives None: such a command runs as given, through ``sh -c``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SERVERS = ("uvicorn", "gunicorn", "hypercorn")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_UNSUPPORTED = ("--reload", "--uds", "--fd", "--daemon", "-D", "--paste", "--pid", "-p")


@dataclass(frozen=True)
class ServerCommand:
    pre_commands: tuple[str, ...]  # shell commands to run (in order) before the server starts
    argv: tuple[str, ...]  # the server's own argv, program name first (``uvicorn`` / ``gunicorn``)
    server: str
    chdir: str | None = None  # relative to the app's root (``cd DIR && …``)
    env: Mapping[str, str] = field(default_factory=dict)  # ``VAR=value server …`` prefixes


def parse_server_command(
    command: str, port: int, env: Mapping[str, str] | None = None
) -> ServerCommand | None:
    """Split ``pre && … && server args`` (variables expanded); None when it is not that shape."""
    variables = {**(env or {}), "PORT": str(port)}
    parts = [p.strip() for p in command.strip().split("&&")]
    if not parts or any(not p for p in parts):
        return None
    chdir: PurePosixPath | None = None
    pre: list[str] = []
    for part in parts[:-1]:
        target = _cd_target(part)
        if target is None:
            pre.append(part if chdir is None else f"cd {shlex.quote(str(chdir))} && {part}")
            continue
        if target.is_absolute() or ".." in target.parts:
            return None
        chdir = target if chdir is None else chdir / target
    last = parts[-1]
    if any(ch in _VAR.sub("", last) for ch in "|;<>`$&"):
        return None
    expanded = _expand(last, variables)
    if expanded is None:
        return None
    try:
        argv = shlex.split(expanded)
    except ValueError:
        return None
    assignments: dict[str, str] = {}
    while argv and _ASSIGNMENT.match(argv[0]):
        name, _, value = argv.pop(0).partition("=")
        assignments[name] = value
    argv = _strip_launcher(argv)
    if not argv:
        return None
    server = PurePosixPath(argv[0]).name
    if server not in SERVERS:
        return None
    if any(a in _UNSUPPORTED or a.split("=", 1)[0] in _UNSUPPORTED for a in argv[1:]):
        return None
    return ServerCommand(
        tuple(pre),
        (server, *argv[1:]),
        server,
        chdir=str(chdir) if chdir is not None and str(chdir) != "." else None,
        env=assignments,
    )


def _cd_target(part: str) -> PurePosixPath | None:
    try:
        words = shlex.split(part)
    except ValueError:
        return None
    if len(words) == 2 and words[0] == "cd" and not any(ch in words[1] for ch in "$`~"):
        return PurePosixPath(words[1])
    return None


def _expand(text: str, env: Mapping[str, str]) -> str | None:
    """``$X``, ``${X}``, ``${X:-d}``, ``${X-d}`` as sh expands them; None if one is unset (the
    command then runs as given, where the shell shows what it does with it)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1) or match.group(4)
        colon, default = match.group(2), match.group(3)
        current = env.get(name)
        if default is not None and (current is None or (colon and current == "")):
            return default
        if current is None:
            missing = True
            return ""
        return current

    expanded = _VAR.sub(value, text)
    return None if missing else expanded


def _strip_launcher(argv: list[str]) -> list[str]:
    """``python -m uvicorn …`` / ``exec gunicorn …`` → ``uvicorn …`` / ``gunicorn …``."""
    if argv and argv[0] == "exec":
        argv = argv[1:]
    if len(argv) >= 3 and PurePosixPath(argv[0]).name.startswith("python") and argv[1] == "-m":
        return argv[2:]
    return argv
