"""The Procfile (Heroku's format): one ``name: command`` per line.

``web`` is the start command, ``release`` the release command, any other name an extra process
(``worker``, ``clock``, …). Blank lines and ``#`` comments are skipped. A line that is not
``name: command``, a command the shell could not parse, or a name given twice is an error that
quotes the line: a build never guesses around a declaration it cannot read.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from phemeral.errors import DetectionError

FILENAME = "Procfile"
_LINE = re.compile(r"^([A-Za-z0-9_-]+)[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    command: str
    line: int  # 1-based


def parse_procfile(text: str, path: str = FILENAME) -> list[ProcfileEntry]:
    """The entries of the Procfile at ``path`` in order; a bad line raises `DetectionError`."""
    entries: list[ProcfileEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise DetectionError(
                f"{path}:{number}: cannot read {raw.strip()!r}: a Procfile line is "
                "`name: command` (for example `web: gunicorn app:app`). Fix or remove the line."
            )
        name, command = match.group(1), match.group(2).strip()
        if not command:
            raise DetectionError(
                f"{path}:{number}: {raw.strip()!r} declares the process {name!r} without a "
                "command. Add the command after the colon or remove the line."
            )
        try:
            shlex.split(command)
        except ValueError as exc:
            raise DetectionError(
                f"{path}:{number}: the command of {name!r} cannot be parsed ({exc}): "
                f"{raw.strip()!r}. Close the quote or escape it."
            ) from None
        if name in seen:
            raise DetectionError(
                f"{path}:{number}: {raw.strip()!r} declares {name!r} again (first on line "
                f"{seen[name]}). Keep one of the two lines."
            )
        seen[name] = number
        entries.append(ProcfileEntry(name, command, number))
    return entries
