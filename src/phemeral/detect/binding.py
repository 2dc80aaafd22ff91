"""Reading a declared command line: its steps, its server, and the port it binds.

Pure string work on commands a repository declares (never the project's saved custom command,
which runs exactly as given):

- `split_steps` splits ``a && b && c`` at the top level (quotes respected);
- `server_of` names the web server a step starts (``gunicorn``, ``python -m uvicorn``, …);
- `split_release_step` takes leading one-off steps (``python manage.py migrate && gunicorn …``)
  off a start command, so they can run once per deployment instead of on every start;
- `bind_to_port` makes a server step listen on ``$PORT``: a literal port (``--port 5000``,
  ``-b 0.0.0.0:8000``) is replaced and a missing one added, each change said in a note.
  ``$PORT`` and ``${PORT:-8000}`` are left as written (the shell expands them).
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePath

SERVERS = ("gunicorn", "uvicorn", "hypercorn", "granian", "daphne", "waitress-serve")
# Leading steps that change the shell the server runs in: never split off.
_SHELL_STATE = ("cd", "export", "source", ".", "set", "unset", "ulimit", "umask", "exec")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Steps that write files next to the app (static files, compiled messages): they stay in front of
# the server, where the app's writable directory is, instead of moving to the release command.
_FILES_STEP = re.compile(r"\b(collectstatic|compilemessages|compress|translate\s+compile)\b")
_METACHARS = re.compile(r"[|;<>`]|(?<![$])\((?!\))")


def split_steps(command: str) -> list[str]:
    """``a && b`` → ``["a", "b"]``, ignoring ``&&`` inside quotes; [command] if none."""
    steps: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(command):
        ch = command[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(command):
                current.append(ch)
                i += 1
                ch = command[i]
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(command):
            current.append(ch)
            i += 1
            ch = command[i]
        elif command.startswith("&&", i):
            steps.append("".join(current).strip())
            current = []
            i += 2
            continue
        current.append(ch)
        i += 1
    steps.append("".join(current).strip())
    return steps


def _words(step: str) -> list[str]:
    try:
        return shlex.split(step)
    except ValueError:
        return []


def server_of(step: str) -> str | None:
    """The server a single step starts (``fastapi`` for ``fastapi run``), or None."""
    words = _words(step)
    while words and (words[0] in ("exec", "env") or _ASSIGNMENT.match(words[0])):
        words = words[1:]  # `exec`, `env`, `NAME=value` before the program
    if len(words) >= 3 and PurePath(words[0]).name.startswith("python") and words[1] == "-m":
        words = words[2:]
    if not words:
        return None
    name = PurePath(words[0]).name
    if name in SERVERS:
        return name
    if name == "fastapi" and len(words) > 1 and words[1] == "run":
        return "fastapi"
    return None


def split_release_step(command: str) -> tuple[str | None, str]:
    """``steps && server …`` → (``steps``, ``server …``); (None, command) when not that shape.

    Only when the last step starts a known web server and no leading step changes the shell
    the server runs in (``cd``, ``export``, ``source``, assignments). Steps that write files
    beside the app (``collectstatic``, ``compilemessages``) stay in front of the server.
    """
    steps = split_steps(command)
    if len(steps) < 2 or any(not step for step in steps):
        return None, command
    if server_of(steps[-1]) is None:
        return None, command
    for step in steps[:-1]:
        words = _words(step)
        if not words or words[0] in _SHELL_STATE or _ASSIGNMENT.match(words[0]):
            return None, command
    release = [step for step in steps[:-1] if not _FILES_STEP.search(step)]
    stays = [step for step in steps[:-1] if _FILES_STEP.search(step)]
    if not release:
        return None, command
    return " && ".join(release), " && ".join([*stays, steps[-1]])


def _mentions_port(value: str) -> bool:
    return "$PORT" in value or "${PORT" in value


def _option(step: str, names: tuple[str, ...]) -> re.Match[str] | None:
    alternatives = "|".join(re.escape(n) for n in names)
    return re.search(rf"(?<!\S)({alternatives})(=|[ \t]+)(\S+)", step)


def _has_flag(step: str, names: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<!\S){re.escape(n)}(=|\s|$)", step) for n in names)


def _insert_after_program(step: str, addition: str, server: str) -> str:
    program = "fastapi run" if server == "fastapi" else server
    match = re.search(rf"(?<!\S)\S*?{re.escape(program)}(?=\s|$)", step)
    if match is None:
        return f"{step} {addition}"
    return f"{step[: match.end()]} {addition}{step[match.end() :]}"


def _replace(step: str, match: re.Match[str], value: str) -> str:
    return f"{step[: match.start(3)]}{value}{step[match.end(3) :]}"


def _bind_step(step: str, server: str) -> tuple[str, str | None]:
    if _METACHARS.search(step):
        return step, None
    if server in ("gunicorn", "hypercorn"):
        bind = _option(step, ("-b", "--bind"))
        if bind is None:
            if _has_flag(step, ("--uds", "--fd")):
                return step, None
            new = _insert_after_program(step, "--bind 0.0.0.0:$PORT", server)
            return new, f"added --bind 0.0.0.0:$PORT to the {server} command"
        value = bind.group(3).strip("'\"")
        if _mentions_port(value) or value.startswith(("unix:", "fd://")):
            return step, None
        new = _replace(step, bind, "0.0.0.0:$PORT")
        return new, f"the {server} bind {value} became 0.0.0.0:$PORT (the platform's port)"
    if server in ("uvicorn", "granian", "fastapi", "daphne"):
        if _has_flag(step, ("--uds", "--fd", "-u", "--unix-socket", "-e", "--endpoint")):
            return step, None
        port_names = ("-p", "--port") if server == "daphne" else ("--port",)
        host_names = ("-b", "--bind") if server == "daphne" else ("--host",)
        notes: list[str] = []
        port = _option(step, port_names)
        if port is None:
            step = _insert_after_program(step, f"{port_names[-1]} $PORT", server)
            notes.append(f"added {port_names[-1]} $PORT")
        elif not _mentions_port(port.group(3)):
            notes.append(f"the {server} port {port.group(3)} became $PORT")
            step = _replace(step, port, "$PORT")
        if _option(step, host_names) is None and server != "fastapi":
            step = _insert_after_program(step, f"{host_names[-1]} 0.0.0.0", server)
            notes.append(f"added {host_names[-1]} 0.0.0.0")
        return step, ("; ".join(notes) + f" ({server} does not read $PORT)") if notes else None
    if server == "waitress-serve":
        listen = _option(step, ("--listen", "--port"))
        if listen is None:
            new = _insert_after_program(step, "--listen=0.0.0.0:$PORT", server)
            return new, "added --listen=0.0.0.0:$PORT to the waitress-serve command"
        if _mentions_port(listen.group(3)):
            return step, None
        value = "0.0.0.0:$PORT" if listen.group(1) == "--listen" else "$PORT"
        return _replace(step, listen, value), f"the waitress-serve {listen.group(1)} became $PORT"
    return step, None


def bind_to_port(command: str) -> tuple[str, str | None]:
    """The command with its server step listening on ``$PORT``, and a note when it changed."""
    steps = split_steps(command)
    server = server_of(steps[-1]) if steps else None
    if server is None:
        return command, None
    last, note = _bind_step(steps[-1], server)
    if note is None:
        return command, None
    return " && ".join([*steps[:-1], last]), note
