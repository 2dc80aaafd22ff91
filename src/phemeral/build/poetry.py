"""Turn a ``poetry.lock`` into the hashed, pinned requirements of its production set (pure).

Poetry itself is never run (its resolver cannot reach the index from every machine, and uv
installs a pinned set much faster). The production set is:

- lock 2.1+ (``groups = [...]`` per package): packages in the ``main`` group, whose marker for
  that group holds on the target interpreter;
- lock 1.x (``category = "main"``): packages of category main that are not optional;
- lock 2.0 (neither): everything reachable from the main dependencies of ``pyproject.toml``
  through the lock's dependency edges, following edge markers and skipping optional edges.

Each pinned package is written as ``name==version --hash=sha256:…`` for every file the lock
lists (per package in lock 2.x; under ``[metadata.files]`` in lock 1.x), so
``uv pip install --require-hashes --no-deps`` installs exactly the locked artifacts.

The project itself is installed (non-editable) when it is a package; a project whose package
folder does not exist (``name = "my-app"`` with no ``my_app/``, and no ``packages`` declared) is
installed the way ``poetry install --no-root`` does: its dependencies only, with a warning.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, Marker

from phemeral.errors import BuildError

STAGE = "install"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_environment(python_version: str, machine: str = "x86_64") -> dict[str, str]:
    """PEP 508 marker values of a CPython ``python_version`` (``3.12.1``) on Linux (pure)."""
    minor = ".".join(python_version.split(".")[:2])
    return {
        "implementation_name": "cpython",
        "implementation_version": python_version,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python_version,
        "platform_python_implementation": "CPython",
        "python_version": minor,
        "sys_platform": "linux",
    }


def _marker_holds(marker: object, env: Mapping[str, str]) -> bool:
    if not isinstance(marker, str) or not marker.strip():
        return True
    try:
        return Marker(marker).evaluate(dict(env))
    except InvalidMarker:
        return True  # an unreadable marker keeps the package: uv rejects what cannot install


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]
    source_type: str | None = None


@dataclass(frozen=True)
class PoetryPlan:
    packages: tuple[LockedPackage, ...]
    install_root: bool  # False for package-mode = false projects

    def requirements_text(self) -> str:
        lines = []
        for package in self.packages:
            hashes = "".join(f" \\\n    --hash={h}" for h in package.hashes)
            lines.append(f"{package.name}=={package.version}{hashes}")
        return "\n".join(lines) + "\n"


def _main_roots(pyproject: Mapping[str, Any]) -> dict[str, bool]:
    """Main dependency names of the project → whether they are optional."""
    roots: dict[str, bool] = {}
    poetry = pyproject.get("tool", {}).get("poetry", {})
    for name, spec in (poetry.get("dependencies") or {}).items():
        if normalise(name) == "python":
            continue
        optional = isinstance(spec, dict) and bool(spec.get("optional"))
        roots[normalise(name)] = optional
    for requirement in (pyproject.get("project") or {}).get("dependencies") or []:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(requirement))
        if match:
            roots.setdefault(normalise(match.group(1)), False)
    return roots


def plan(lock_text: str, pyproject_text: str, python_version: str) -> PoetryPlan:
    """The production set of a poetry.lock for ``python_version``; BuildError when unusable."""
    try:
        lock = tomllib.loads(lock_text)
        pyproject = tomllib.loads(pyproject_text)
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(
            f"poetry.lock or pyproject.toml cannot be parsed: {exc}", stage=STAGE
        ) from exc
    env = marker_environment(python_version)
    raw = [p for p in lock.get("package", []) if isinstance(p, dict) and "name" in p]
    metadata_files = {  # lock format 1.x keeps the hashes apart from the packages
        normalise(str(name)): files
        for name, files in ((lock.get("metadata") or {}).get("files") or {}).items()
        if isinstance(files, list)
    }
    by_name = {normalise(p["name"]): p for p in raw}
    roots = _main_roots(pyproject)
    missing = sorted(n for n, optional in roots.items() if not optional and n not in by_name)
    if missing:
        raise BuildError(
            f"poetry.lock is out of date: {', '.join(missing)} from pyproject.toml is not in it; "
            "run `poetry lock` and commit poetry.lock",
            stage=STAGE,
        )
    chosen: list[dict[str, Any]] = []
    if any("groups" in p for p in raw):
        for package in raw:
            groups = package.get("groups") or []
            markers = package.get("markers")
            marker = markers.get("main") if isinstance(markers, dict) else markers
            if "main" in groups and _marker_holds(marker, env):
                chosen.append(package)
    elif any("category" in p for p in raw):
        chosen = [p for p in raw if p.get("category") == "main" and not p.get("optional")]
    else:
        seen: set[str] = set()
        stack = [n for n, optional in roots.items() if not optional]
        while stack:
            name = stack.pop()
            if name in seen or name not in by_name:
                continue
            seen.add(name)
            package = by_name[name]
            chosen.append(package)
            for dep, spec in (package.get("dependencies") or {}).items():
                specs = spec if isinstance(spec, list) else [spec]
                for one in specs:
                    if isinstance(one, dict):
                        if one.get("optional"):
                            continue
                        if not _marker_holds(one.get("markers"), env):
                            continue
                    stack.append(normalise(dep))
                    break
    packages = []
    for package in sorted(chosen, key=lambda p: normalise(p["name"])):
        source = package.get("source") or {}
        source_type = source.get("type") if isinstance(source, dict) else None
        if source_type in ("git", "directory", "file", "url"):
            raise BuildError(
                f"poetry.lock installs {package['name']} from a {source_type} source, which "
                "cannot be verified by hash; publish it to an index or vendor it as a wheel",
                stage=STAGE,
            )
        files = package.get("files") or metadata_files.get(normalise(package["name"]), [])
        hashes = tuple(sorted({f["hash"] for f in files if isinstance(f, dict) and f.get("hash")}))
        if not hashes:
            raise BuildError(
                f"poetry.lock has no file hashes for {package['name']}; run `poetry lock` again",
                stage=STAGE,
            )
        packages.append(
            LockedPackage(normalise(package["name"]), str(package["version"]), hashes, source_type)
        )
    poetry = pyproject.get("tool", {}).get("poetry", {})
    # the root is a package only with a build backend and unless package-mode = false
    install_root = poetry.get("package-mode", True) is not False and "build-system" in pyproject
    return PoetryPlan(packages=tuple(packages), install_root=install_root)


def missing_root_package(pyproject_text: str, exists: Callable[[str], bool]) -> str | None:
    """Why the project itself cannot be built as a package (its folder is missing), or None.

    Poetry's default package is the project name with ``-``/``.`` as ``_``, looked for as a
    folder or module at the root or under ``src/``; declared ``packages`` are trusted.
    """
    try:
        pyproject = tomllib.loads(pyproject_text)
    except tomllib.TOMLDecodeError:
        return None
    poetry = pyproject.get("tool", {}).get("poetry", {})
    if poetry.get("packages") or poetry.get("package-mode", True) is False:
        return None
    name = poetry.get("name") or (pyproject.get("project") or {}).get("name")
    if not isinstance(name, str) or not name:
        return None
    module = re.sub(r"[-.]+", "_", name).lower()
    modules = {module, re.sub(r"[-.]+", "_", name)}
    places = [p for m in modules for p in (m, f"{m}.py", f"src/{m}", f"src/{m}.py")]
    if any(exists(place) for place in places):
        return None
    return (
        f"the project is named {name!r} but has no {module}/ package (nor {module}.py, "
        f"src/{module}/), so it is not installed itself, like `poetry install --no-root`; "
        "set `package-mode = false` under [tool.poetry] to say so, or declare `packages`"
    )
