"""Reading the manifests and lockfiles of one project directory (pyproject, Pipfile, locks).

Every reader takes a `SourceTree` and a directory, tolerates missing, oversized and invalid
files (an invalid file becomes a warning, never an exception), and remembers where each fact
came from (``file:line``) so decisions can cite it.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from phemeral.detect.lockscan import scan_poetry_lock, scan_uv_lock
from phemeral.detect.requirements import Dependency, normalise
from phemeral.detect.tree import SourceTree


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def line_of(text: str, pattern: str) -> int | None:
    """1-based number of the first line matching ``pattern`` (multiline regex), or None."""
    match = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def cite(path: str, text: str | None, pattern: str) -> str:
    line = line_of(text, pattern) if text else None
    return f"{path}:{line}" if line else path


def load_toml(
    tree: SourceTree, path: str, warnings: list[str]
) -> tuple[dict[str, Any], str] | None:
    """The parsed TOML and its text, or None (absent, or invalid → a warning)."""
    text = tree.read_text(path)
    if text is None:
        if path in tree.too_large:
            warnings.append(f"{path} is larger than {tree.max_file_bytes} bytes; ignored")
        return None
    try:
        return tomllib.loads(text), text
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        warnings.append(f"{path} is not valid TOML ({exc}); ignored")
        return None


def load_lock(
    tree: SourceTree,
    path: str,
    warnings: list[str],
    scan: Callable[[str], dict[str, Any] | None],
) -> tuple[dict[str, Any], str] | None:
    """A lockfile through its fast scanner, or a full TOML parse if its layout is unusual."""
    text = tree.read_text(path)
    scanned = scan(text) if text is not None else None
    if scanned is not None and text is not None:
        return scanned, text
    return load_toml(tree, path, warnings)


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _pep508(spec: object, source: str) -> Dependency | None:
    if not isinstance(spec, str):
        return None
    try:
        req = Requirement(spec)
    except InvalidRequirement:
        return None
    return Dependency(normalise(req.name), frozenset(normalise(e) for e in req.extras), source)


@dataclass
class Pyproject:
    path: str
    has_project: bool = False
    has_poetry: bool = False
    has_build_system: bool = False
    is_uv_workspace: bool = False
    name: str | None = None
    requires_python: str | None = None
    requires_python_source: str = ""
    poetry_python: str | None = None
    poetry_python_source: str = ""
    poetry_package_mode: bool = True
    scripts: dict[str, str] = field(default_factory=dict)
    fastapi_entrypoint: str | None = None  # [tool.fastapi] entrypoint = "pkg.main:app"
    fastapi_entrypoint_source: str = ""
    dependencies: list[Dependency] = field(default_factory=list)

    @property
    def is_manifest(self) -> bool:
        """A real project manifest, not a tooling-only file (just ``[tool.ruff]``, say)."""
        return self.has_project or self.has_poetry


def read_pyproject(tree: SourceTree, directory: str, warnings: list[str]) -> Pyproject | None:
    path = join(directory, "pyproject.toml")
    loaded = load_toml(tree, path, warnings)
    if loaded is None:
        return None
    data, text = loaded
    result = Pyproject(path=path)
    project = _table(data.get("project"))
    tool = _table(data.get("tool"))
    poetry = _table(tool.get("poetry"))
    result.has_build_system = "build-system" in data
    result.is_uv_workspace = "workspace" in _table(tool.get("uv"))
    entrypoint = _table(tool.get("fastapi")).get("entrypoint")
    if isinstance(entrypoint, str):
        result.fastapi_entrypoint = entrypoint.strip()
        result.fastapi_entrypoint_source = cite(path, text, r"^\s*entrypoint\s*=")
    if project:
        result.has_project = True
        name = project.get("name")
        result.name = name if isinstance(name, str) else None
        rp = project.get("requires-python")
        if isinstance(rp, str):
            result.requires_python = rp
            result.requires_python_source = cite(path, text, r"^\s*requires-python\s*=")
        deps = project.get("dependencies")
        for spec in deps if isinstance(deps, list) else []:
            dep = _pep508(spec, cite(path, text, r"^\s*dependencies\s*="))
            if dep:
                result.dependencies.append(dep)
        scripts = _table(project.get("scripts"))
        result.scripts.update({k: v for k, v in scripts.items() if isinstance(v, str)})
    if "poetry" in tool and isinstance(tool["poetry"], dict):
        result.has_poetry = True
        if result.name is None and isinstance(poetry.get("name"), str):
            result.name = poetry["name"]
        result.poetry_package_mode = poetry.get("package-mode", True) is not False
        pdeps = _table(poetry.get("dependencies"))
        for key, value in pdeps.items():
            if normalise(key) == "python":
                if isinstance(value, str):
                    result.poetry_python = value
                    result.poetry_python_source = cite(path, text, r"^\s*python\s*=")
                continue
            extras: frozenset[str] = frozenset()
            if isinstance(value, dict):
                if value.get("optional") is True:
                    continue
                raw = value.get("extras")
                if isinstance(raw, list):
                    extras = frozenset(normalise(str(e)) for e in raw)
            where = cite(path, text, rf"^\s*\"?{re.escape(key)}\"?\s*=")
            result.dependencies.append(Dependency(normalise(key), extras, where))
        scripts = _table(poetry.get("scripts"))
        result.scripts.update({k: v for k, v in scripts.items() if isinstance(v, str)})
    return result


@dataclass
class Lockfile:
    path: str
    kind: str  # "uv" | "poetry"
    packages: frozenset[str]  # normalised names of the production set
    requires_python: str | None = None
    requires_python_source: str = ""


def read_uv_lock(tree: SourceTree, directory: str, warnings: list[str]) -> Lockfile | None:
    path = join(directory, "uv.lock")
    if not tree.is_file(path):
        return None
    loaded = load_lock(tree, path, warnings, scan_uv_lock)
    if loaded is None:
        return Lockfile(path=path, kind="uv", packages=frozenset())
    data, text = loaded
    packages = [p for p in _list(data.get("package")) if isinstance(p, dict)]
    by_name = {normalise(str(p.get("name", ""))): p for p in packages}
    roots = [
        p
        for p in packages
        if isinstance(p.get("source"), dict)
        and (p["source"].get("editable") == "." or p["source"].get("virtual") == ".")
    ]
    if roots:
        wanted: set[str] = set()
        stack: list[tuple[str, tuple[str, ...]]] = []
        for root in roots:
            wanted.add(normalise(str(root.get("name", ""))))
            stack.extend(_uv_edges(root.get("dependencies")))
        while stack:
            name, extras = stack.pop()
            package = by_name.get(name)
            key = name + "[" + ",".join(extras) + "]"
            if key in wanted:
                continue
            wanted.add(key)
            wanted.add(name)
            if package is None:
                continue
            stack.extend(_uv_edges(package.get("dependencies")))
            optional = _table(package.get("optional-dependencies"))
            for extra in extras:
                stack.extend(_uv_edges(optional.get(extra)))
        names = frozenset(n for n in wanted if "[" not in n)
    else:
        names = frozenset(by_name)
    rp = data.get("requires-python")
    return Lockfile(
        path=path,
        kind="uv",
        packages=names,
        requires_python=rp if isinstance(rp, str) else None,
        requires_python_source=cite(path, text, r"^requires-python\s*="),
    )


def _uv_edges(value: object) -> list[tuple[str, tuple[str, ...]]]:
    edges: list[tuple[str, tuple[str, ...]]] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            extra = item.get("extra")
            extras = tuple(normalise(e) for e in extra if isinstance(e, str)) if extra else ()
            edges.append((normalise(item["name"]), extras))
    return edges


def read_poetry_lock(tree: SourceTree, directory: str, warnings: list[str]) -> Lockfile | None:
    path = join(directory, "poetry.lock")
    if not tree.is_file(path):
        return None
    loaded = load_lock(tree, path, warnings, scan_poetry_lock)
    if loaded is None:
        return Lockfile(path=path, kind="poetry", packages=frozenset())
    data, text = loaded
    names: set[str] = set()
    for package in _list(data.get("package")):
        if not isinstance(package, dict) or not isinstance(package.get("name"), str):
            continue
        groups = package.get("groups")
        category = package.get("category")
        if isinstance(groups, list) and "main" not in groups:
            continue
        if isinstance(category, str) and category != "main":
            continue
        names.add(normalise(package["name"]))
    metadata = _table(data.get("metadata"))
    rp = metadata.get("python-versions")
    return Lockfile(
        path=path,
        kind="poetry",
        packages=frozenset(names),
        requires_python=rp if isinstance(rp, str) and rp.strip() not in ("", "*") else None,
        requires_python_source=cite(path, text, r"^python-versions\s*="),
    )


@dataclass
class Pipfile:
    path: str
    dependencies: list[Dependency]
    python_version: str | None
    python_version_source: str


def read_pipfile(tree: SourceTree, directory: str, warnings: list[str]) -> Pipfile | None:
    path = join(directory, "Pipfile")
    loaded = load_toml(tree, path, warnings)
    if loaded is None:
        return None
    data, text = loaded
    deps = [
        Dependency(normalise(k), frozenset(), cite(path, text, rf"^\s*\"?{re.escape(k)}\"?\s*="))
        for k in _table(data.get("packages"))
    ]
    requires = _table(data.get("requires"))
    version = requires.get("python_full_version") or requires.get("python_version")
    return Pipfile(
        path=path,
        dependencies=deps,
        python_version=version if isinstance(version, str) else None,
        python_version_source=cite(path, text, r"^\s*python_(full_)?version\s*="),
    )


def read_pipfile_lock(tree: SourceTree, directory: str, warnings: list[str]) -> Lockfile | None:
    """``Pipfile.lock`` (JSON): its ``default`` section is the production set."""
    path = join(directory, "Pipfile.lock")
    text = tree.read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        warnings.append(f"{path} is not valid JSON ({exc}); ignored")
        return None
    default = data.get("default") if isinstance(data, dict) else None
    names = frozenset(normalise(k) for k in default) if isinstance(default, dict) else frozenset()
    return Lockfile(path=path, kind="pipenv", packages=names)


def read_setup(tree: SourceTree, directory: str) -> list[Dependency]:
    """``install_requires`` of ``setup.py`` (literal lists only, read from the AST) or
    ``setup.cfg`` ``[options]``; [] when there is none."""
    deps: list[Dependency] = []
    path = join(directory, "setup.py")
    text = tree.read_text(path)
    if text is not None:
        try:
            module = ast.parse(text, filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            module = None
        for node in ast.walk(module) if module else ():
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "install_requires" and isinstance(
                    keyword.value, (ast.List, ast.Tuple)
                ):
                    for item in keyword.value.elts:
                        if isinstance(item, ast.Constant):
                            dep = _pep508(item.value, f"{path}:{item.lineno}")
                            if dep:
                                deps.append(dep)
    cfg_path = join(directory, "setup.cfg")
    cfg = tree.read_text(cfg_path)
    if cfg is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(cfg)
            raw = parser.get("options", "install_requires", fallback="")
        except configparser.Error:
            raw = ""
        for line in raw.splitlines():
            dep = _pep508(line.split("#", 1)[0].strip(), cite(cfg_path, cfg, r"install_requires"))
            if dep:
                deps.append(dep)
    return deps
