"""Which Python interpreters this machine has, and which one serves a requested version.

Discovery looks where interpreters really live on self-hosted machines: the directories on
PATH, the pyenv versions folder (its shims for non-default versions do not work, so they are
skipped), uv-managed interpreters, and any paths the operator configured. Each candidate is
asked for its version once (results are cached per path and mtime), so a broken shim or a
stale symlink is simply not listed. `choose` is the pure decision.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_NAME = re.compile(r"^python3(\.\d+)?$")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, order=True)
class Interpreter:
    """One working CPython interpreter."""

    version: str  # "3.12.1"
    path: Path

    @property
    def minor(self) -> str:
        """``major.minor``, e.g. ``3.12``."""
        major, minor, *_ = self.version.split(".")
        return f"{major}.{minor}"

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))


def candidate_paths(environ: Mapping[str, str], extra_paths: Sequence[Path] = ()) -> list[Path]:
    """Every file that might be an interpreter, in search order (pure apart from listing dirs)."""
    found: list[Path] = []
    home = Path(environ.get("HOME", "/root"))
    for extra in extra_paths:
        if extra.is_dir():
            found.extend(_pythons_in(extra / "bin") or _pythons_in(extra))
        else:
            found.append(extra)
    pyenv_root = Path(environ.get("PYENV_ROOT", home / ".pyenv"))
    for version_dir in _sorted_dirs(pyenv_root / "versions"):
        found.extend(_pythons_in(version_dir / "bin"))
    uv_dir = Path(environ.get("UV_PYTHON_INSTALL_DIR", home / ".local" / "share" / "uv" / "python"))
    for version_dir in _sorted_dirs(uv_dir):
        found.extend(_pythons_in(version_dir / "bin"))
    for directory in environ.get("PATH", "").split(os.pathsep):
        if directory and "shims" not in Path(directory).parts:
            found.extend(_pythons_in(Path(directory)))
    return found


def _sorted_dirs(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir())
    except OSError:
        return []


def _pythons_in(directory: Path) -> list[Path]:
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return []
    return [directory / name for name in names if _NAME.match(name)]


@lru_cache(maxsize=256)
def _probe(path: str, mtime_ns: int) -> str | None:
    del mtime_ns  # part of the cache key: a replaced interpreter is probed again
    try:
        result = subprocess.run(
            [path, "-I", "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.match(result.stdout.strip())
    if result.returncode != 0 or not match:
        return None
    return ".".join(match.groups())


def probe(path: Path) -> Interpreter | None:
    """Ask one file for its version; None if it is not a working CPython."""
    try:
        resolved = path.resolve(strict=True)
        mtime = resolved.stat().st_mtime_ns
    except OSError:
        return None
    version = _probe(str(resolved), mtime)
    return Interpreter(version=version, path=path) if version else None


def discover_pythons(
    extra_paths: Sequence[Path] = (), environ: Mapping[str, str] | None = None
) -> list[Interpreter]:
    """Working interpreters, one per ``major.minor`` (the newest patch wins), sorted by version."""
    env = os.environ if environ is None else environ
    seen: set[Path] = set()
    interpreters: list[Interpreter] = []
    for path in candidate_paths(env, extra_paths):
        try:
            key = path.resolve(strict=True)
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        interpreter = probe(path)
        if interpreter is not None and interpreter.version_tuple >= (3, 0):
            interpreters.append(interpreter)
    return newest_per_minor(interpreters)


def newest_per_minor(interpreters: Iterable[Interpreter]) -> list[Interpreter]:
    """Keep the newest patch of each ``major.minor``; sorted oldest → newest (pure)."""
    best: dict[str, Interpreter] = {}
    for interpreter in interpreters:
        current = best.get(interpreter.minor)
        if current is None or interpreter.version_tuple > current.version_tuple:
            best[interpreter.minor] = interpreter
    return sorted(best.values(), key=lambda i: i.version_tuple)


def choose(interpreters: Sequence[Interpreter], minor: str) -> Interpreter | None:
    """The interpreter serving ``major.minor``, or None (pure)."""
    matches = [i for i in interpreters if i.minor == minor]
    return max(matches, key=lambda i: i.version_tuple) if matches else None
