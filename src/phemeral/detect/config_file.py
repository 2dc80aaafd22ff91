"""``phemeral.toml``: what a repository declares for Phemeral itself.

    start = "gunicorn --config gunicorn.conf.py app.wsgi"
    release = "python manage.py migrate --noinput"
    root_dir = "backend"
    python_version = "3.12"
    health_check_path = "/healthz"
    idle_timeout = 600          # seconds without requests before the app scales to zero
    release_timeout = 900       # seconds the release command may run

    [processes]
    worker = "celery -A proj worker --loglevel info"

Every key is optional. Settings saved on the project win over the file. It is read from the
repository root and, when the app lives in a subfolder, from that folder (the folder's file wins
key by key). Unknown keys are warnings; a value of the wrong type, or a file that is not TOML, is
a build failure naming the key and the line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

from phemeral.detect.manifests import join
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError

FILENAME = "phemeral.toml"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

_STRINGS = ("start", "release", "root_dir", "python_version", "health_check_path")
_NUMBERS = ("idle_timeout", "release_timeout")


@dataclass(frozen=True)
class ConfigValue:
    value: str | float
    location: str  # "phemeral.toml:3"


@dataclass
class ConfigFile:
    path: str
    values: dict[str, ConfigValue] = field(default_factory=dict)
    processes: dict[str, ConfigValue] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def text(self, key: str) -> ConfigValue | None:
        return self.values.get(key)


def _line_of(text: str, key: str, section: str | None = None) -> int:
    in_section = section is None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = section is not None and stripped.strip("[] ") == section
            if section is None:
                return 0
            continue
        if in_section and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", stripped):
            return number
    return 0


def read_config(tree: SourceTree, directory: str) -> ConfigFile | None:
    """``{directory}/phemeral.toml`` read and checked, or None when there is none."""
    path = join(directory, FILENAME)
    text = tree.read_text(path)
    if text is None:
        return None
    try:
        data = tomllib.loads(text.lstrip("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise DetectionError(f"{path} is not valid TOML: {exc}. Fix the file.") from None
    config = ConfigFile(path)

    def where(key: str, section: str | None = None) -> str:
        line = _line_of(text, key, section)
        return f"{path}:{line}" if line else path

    for key, value in data.items():
        if key in _STRINGS:
            if not isinstance(value, str) or not value.strip():
                raise DetectionError(
                    f"{where(key)}: {key} must be a non-empty string, not {value!r}."
                )
            if key == "health_check_path" and (
                not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value)
            ):
                raise DetectionError(
                    f"{where(key)}: health_check_path must start with '/' and hold no spaces, "
                    f"not {value!r}."
                )
            config.values[key] = ConfigValue(value.strip(), where(key))
        elif key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise DetectionError(
                    f"{where(key)}: {key} must be a positive number of seconds, not {value!r}."
                )
            config.values[key] = ConfigValue(float(value), where(key))
        elif key == "processes":
            if not isinstance(value, dict):
                raise DetectionError(f"{where(key)}: [processes] must be a table of commands.")
            for name, command in value.items():
                spot = where(name, "processes")
                if not _NAME.match(name):
                    raise DetectionError(
                        f"{spot}: process name {name!r} may only use letters, digits, - and _."
                    )
                if not isinstance(command, str) or not command.strip():
                    raise DetectionError(
                        f"{spot}: processes.{name} must be a command string, not {command!r}."
                    )
                if name in ("web", "release"):
                    raise DetectionError(
                        f"{spot}: processes.{name}: use the top-level `start` / `release` keys "
                        "for the web and release commands."
                    )
                config.processes[name] = ConfigValue(command.strip(), spot)
        else:
            config.warnings.append(f"{where(key)}: unknown key {key!r} ignored")
    return config
