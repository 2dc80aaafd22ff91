"""Commands that other hosting platforms' files declare.

Adopted as declarations (below ``phemeral.toml`` and the Procfile):

- ``railway.json`` / ``railway.toml``: ``deploy.startCommand``, ``deploy.preDeployCommand``;
- ``render.yaml``: the web service's ``startCommand`` and ``preDeployCommand``;
- ``heroku.yml``: ``run.web`` and ``release.command``.

Shown as hints only (they run in an environment we do not reproduce):

- ``app.json``: ``scripts`` (``postdeploy``, ``dokku.predeploy``) and ``formation``;
- ``Dockerfile``: the last ``CMD`` (its paths and ``ENV`` belong to the image).

A file that cannot be read becomes a warning here, never a failure: these files are written
for another platform and a build must not fail because of one.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from typing import Any

import yaml

from phemeral.detect.manifests import join
from phemeral.detect.tree import SourceTree


@dataclass(frozen=True)
class PlatformCommands:
    source: str  # "railway.json", "render.yaml", "heroku.yml", …
    path: str
    start: str | None
    release: str | None


def _command(value: object) -> str | None:
    """A command given as a string or as an argv list."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if (
            len(value) >= 3
            and value[0] in ("sh", "/bin/sh", "bash", "/bin/bash")
            and value[1]
            in (
                "-c",
                "-lc",
            )
        ):
            return str(value[2]).strip() or None
        if len(value) == 1:
            return value[0].strip() or None  # one item: a shell command line
        return shlex.join(value)
    return None


def _railway(data: Any, source: str, path: str) -> PlatformCommands | None:
    deploy = data.get("deploy") if isinstance(data, dict) else None
    if not isinstance(deploy, dict):
        return None
    start = _command(deploy.get("startCommand"))
    release = deploy.get("preDeployCommand")
    if isinstance(release, list) and all(isinstance(r, str) for r in release):
        release = " && ".join(r.strip() for r in release if r.strip()) or None
    release_cmd = _command(release)
    if start is None and release_cmd is None:
        return None
    return PlatformCommands(source, path, start, release_cmd)


def _render(data: Any, path: str, root_dir: str) -> tuple[PlatformCommands | None, str | None]:
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, list):
        return None, None
    webs = [s for s in services if isinstance(s, dict) and s.get("type") == "web"]
    pythons = [s for s in webs if s.get("runtime", s.get("env")) in ("python", None)]
    if root_dir:
        matching = [s for s in pythons if str(s.get("rootDir", "")).strip("./") == root_dir]
        pythons = matching or pythons
    if len(pythons) > 1:
        names = ", ".join(str(s.get("name", "?")) for s in pythons)
        return None, f"{path} declares several Python web services ({names}); none was taken"
    if not pythons:
        return None, None
    service = pythons[0]
    start = _command(service.get("startCommand"))
    release = _command(service.get("preDeployCommand"))
    if start is None and release is None:
        return None, None
    return PlatformCommands("render.yaml", path, start, release), None


def _heroku_yml(data: Any, path: str) -> PlatformCommands | None:
    if not isinstance(data, dict):
        return None
    run = data.get("run")
    start = None
    if isinstance(run, dict):
        web = run.get("web")
        start = _command(web.get("command") if isinstance(web, dict) else web)
    rel = data.get("release")
    release = _command(rel.get("command")) if isinstance(rel, dict) else None
    if start is None and release is None:
        return None
    return PlatformCommands("heroku.yml", path, start, release)


def read_platform_commands(
    tree: SourceTree, directories: list[str], warnings: list[str]
) -> list[PlatformCommands]:
    """Every adopted platform file, in precedence order (the first directory's first)."""
    found: dict[str, PlatformCommands] = {}
    for directory in directories:
        for name in ("railway.json", "railway.toml", "render.yaml", "heroku.yml"):
            if name in found:
                continue
            path = join(directory, name)
            text = tree.read_text(path)
            if text is None:
                continue
            try:
                if name == "railway.json":
                    data: Any = json.loads(text)
                elif name == "railway.toml":
                    data = tomllib.loads(text)
                else:
                    data = yaml.safe_load(text)
            except (ValueError, yaml.YAMLError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                warnings.append(f"{path} could not be read ({first}); ignored")
                continue
            commands: PlatformCommands | None
            if name.startswith("railway"):
                commands = _railway(data, name, path)
            elif name == "render.yaml":
                commands, note = _render(data, path, directories[0])
                if note:
                    warnings.append(note)
            else:
                commands = _heroku_yml(data, path)
            if commands is not None:
                found[name] = commands
    order = ("railway.json", "railway.toml", "render.yaml", "heroku.yml")
    return [found[name] for name in order if name in found]


_CMD = re.compile(r"^\s*CMD\s+(.+)$", re.IGNORECASE)


def platform_hints(tree: SourceTree, directories: list[str]) -> list[str]:
    """What ``app.json`` and a ``Dockerfile`` declare, as lines for people to read."""
    hints: list[str] = []
    for directory in directories:
        path = join(directory, "app.json")
        text = tree.read_text(path)
        if text is not None:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            scripts = data.get("scripts") if isinstance(data, dict) else None
            if isinstance(scripts, dict):
                for key, value in scripts.items():
                    if isinstance(value, str):
                        hints.append(f"{path}: scripts.{key} = {value!r} (not run here)")
                    elif isinstance(value, dict):
                        for sub, command in value.items():
                            if isinstance(command, str):
                                hints.append(
                                    f"{path}: scripts.{key}.{sub} = {command!r} (not run here; "
                                    "a release command in a Procfile or phemeral.toml is)"
                                )
            formation = data.get("formation") if isinstance(data, dict) else None
            if isinstance(formation, dict) and formation:
                hints.append(
                    f"{path}: formation declares {', '.join(sorted(map(str, formation)))}; "
                    "processes come from the Procfile or phemeral.toml"
                )
        path = join(directory, "Dockerfile")
        text = tree.read_text(path)
        if text is not None:
            last = None
            for number, line in enumerate(text.splitlines(), start=1):
                match = _CMD.match(line)
                if match:
                    last = (number, match.group(1).strip())
            if last is not None:
                number, raw = last
                command = raw
                if raw.startswith("["):
                    with contextlib.suppress(ValueError):
                        command = _command(json.loads(raw)) or raw
                hints.append(
                    f"{path}:{number}: CMD {command} (not used: set it as the start command or "
                    "in a Procfile if the app should start that way)"
                )
    return hints
