"""Which server runs the autodetected default command.

uvicorn (ASGI) and gunicorn (WSGI) unless the project chose another: when hypercorn, granian or
daphne is the server the project depends on directly (and the default one is not), or the only
server anywhere in its resolved dependencies, the default command uses it. A server is added to
the install only when none of them is there.

`servers_in_command` reads which server packages a start command runs, from its words: a
command may be compound (``python manage.py migrate && gunicorn app:app``), prefixed (``exec``,
``env K=V``, ``.venv/bin/gunicorn``) or go through ``python -m``; every simple command counts.
"""

from __future__ import annotations

import re
import shlex
from typing import Literal

from phemeral.detect.dependencies import Dependencies
from phemeral.models import AppSpec

Server = Literal["uvicorn", "gunicorn", "hypercorn", "granian", "daphne"]
ASGI: tuple[Server, ...] = ("uvicorn", "hypercorn", "granian", "daphne")
WSGI: tuple[Server, ...] = ("gunicorn", "granian", "hypercorn")


def choose_server(spec: AppSpec, deps: Dependencies) -> tuple[Server, str | None]:
    """The server for ``spec`` and, when it is not the default, why (``file:line``)."""
    order = ASGI if spec.interface == "asgi" else WSGI
    if spec.factory:
        order = tuple(s for s in order if s != "daphne")  # daphne cannot call a factory
    default = order[0]
    for pool in (deps.direct, deps.resolved):
        present = [s for s in order if s in pool]
        if default in present or not present:
            if default in present:
                return default, None
            continue
        chosen = present[0]
        where = deps.direct.get(chosen) or (deps.files[-1] if deps.files else "dependencies")
        return chosen, f"{chosen} is the project's server ({where})"
    return default, None


# executable (or `python -m` module) → the package that provides it
SERVER_PACKAGES = {
    "gunicorn": "gunicorn",
    "uvicorn": "uvicorn",
    "hypercorn": "hypercorn",
    "daphne": "daphne",
    "granian": "granian",
    "waitress-serve": "waitress",
    "waitress": "waitress",
}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_WRAPPERS = {"exec", "env", "nohup", "time", "command"}


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command in ``command`` (operators split them)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        words = command.split()
    groups: list[list[str]] = [[]]
    for word in words:
        if word in _SEPARATORS:
            groups.append([])
        else:
            groups[-1].append(word)
    return [g for g in groups if g]


def _program(words: list[str]) -> str | None:
    rest = list(words)
    while rest and (rest[0] in _WRAPPERS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", rest[0])):
        rest.pop(0)
    if not rest:
        return None
    name = rest[0].rsplit("/", 1)[-1]
    if re.fullmatch(r"python(\d+(\.\d+)?)?", name) and len(rest) > 2 and rest[1] == "-m":
        return rest[2]
    return name


def servers_in_command(command: str) -> list[str]:
    """The server packages ``command`` runs, in order, each once."""
    found: list[str] = []
    for words in simple_commands(command):
        program = _program(words)
        package = SERVER_PACKAGES.get(program or "")
        if package and package not in found:
            found.append(package)
    return found
