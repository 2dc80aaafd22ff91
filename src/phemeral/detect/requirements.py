"""requirements.txt parsing: names (PEP 503), extras, markers, hashes, ``-r``/``-c`` includes.

Only what detection needs: which distributions a file asks for, and from where (file, line).
Constraint files (``-c``) restrict versions but add no packages, so they are followed only to
record that they exist. Includes are resolved relative to the including file and never leave
the tree; cycles and runaway nesting stop quietly.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement

from phemeral.detect.pyversions import KNOWN_MINORS
from phemeral.detect.tree import SourceTree, clean_relpath

MAX_INCLUDE_DEPTH = 8
_NORMALISE = re.compile(r"[-_.]+")
_EXPORT_HEADERS = (
    ("uv export", "uv"),
    ("uv pip compile", "pip-compile"),
    ("poetry export", "poetry"),
    ("pip-compile", "pip-compile"),
)
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+|(?=\S))(\S+)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_NAME_AT_URL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*@\s*\S")


def normalise(name: str) -> str:
    """PEP 503 normalised project name: ``Flask_SQLAlchemy`` → ``flask-sqlalchemy``."""
    return _NORMALISE.sub("-", name).lower()


@dataclass(frozen=True)
class Dependency:
    name: str  # normalised
    extras: frozenset[str]
    source: str  # "file:line"


@dataclass
class RequirementsFile:
    path: str
    dependencies: list[Dependency] = field(default_factory=list)
    included: list[str] = field(default_factory=list)  # every file read, the top one first
    exported_by: str | None = None  # "uv" / "poetry" / "pip-compile" when the header says so
    warnings: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with comments stripped and backslash continuations joined, keeping line numbers."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw
        if not pending:
            start = number
        # A comment starts at "#" at line start or after whitespace (URLs keep their fragment).
        comment = re.search(r"(^|\s)#", line)
        if comment:
            line = line[: comment.start()]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            out.append((start, full))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def parse_line(line: str) -> tuple[str, frozenset[str]] | None:
    """The normalised name and extras a requirement line asks for, or None (options, paths)."""
    if line.startswith("-"):
        if line.startswith(("-e ", "--editable ", "-e=", "--editable=")):
            egg = _EGG.search(line)
            return (normalise(egg.group(1)), frozenset()) if egg else None
        return None
    # Drop per-requirement options such as --hash=… (pip allows them after the requirement).
    spec = re.split(r"\s--?[a-zA-Z]", line, maxsplit=1)[0].strip()
    if not spec:
        return None
    try:
        req = Requirement(spec)
    except InvalidRequirement:
        at_url = _NAME_AT_URL.match(spec)
        if at_url:
            return normalise(at_url.group(1)), frozenset()
        egg = _EGG.search(spec)
        return (normalise(egg.group(1)), frozenset()) if egg else None
    if req.marker is not None and not _applies_on_linux(req.marker):
        return None
    return normalise(req.name), frozenset(normalise(e) for e in req.extras)


def _applies_on_linux(marker: Marker) -> bool:
    """Judge a marker for a Linux target on any Python the project might run on (the version
    is decided later): ``django==6.0; python_version >= "3.12"`` counts. One that cannot be
    judged keeps the requirement."""
    linux = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
    try:
        return any(
            marker.evaluate({**linux, "python_version": m, "python_full_version": f"{m}.0"})
            for m in KNOWN_MINORS
        )
    except (UndefinedComparison, UndefinedEnvironmentName):
        return True


def parse_requirements(tree: SourceTree, path: str) -> RequirementsFile | None:
    """Parse ``path`` and its ``-r`` includes; None if the file is absent."""
    text = tree.read_text(path)
    if text is None:
        return None
    result = RequirementsFile(path=path)
    head = text[:2000].lower()
    for marker, tool in _EXPORT_HEADERS:
        if marker in head:
            result.exported_by = tool
            break
    _parse_into(tree, path, text, result, seen=set(), depth=0)
    return result


def _parse_into(
    tree: SourceTree, path: str, text: str, result: RequirementsFile, seen: set[str], depth: int
) -> None:
    seen.add(path)
    result.included.append(path)
    for number, line in _logical_lines(text):
        include = _INCLUDE.match(line)
        if include:
            flag, target = include.groups()
            joined = clean_relpath(posixpath.join(posixpath.dirname(path), target))
            if joined is None:
                result.warnings.append(
                    f"{path}:{number} includes {target}, which is outside the project; ignored"
                )
                continue
            if joined in seen or depth >= MAX_INCLUDE_DEPTH:
                continue
            sub = tree.read_text(joined)
            if sub is None:
                result.warnings.append(f"{path}:{number} includes {target}, which is missing")
                continue
            if flag in ("-c", "--constraint"):
                seen.add(joined)
                result.included.append(joined)
                continue
            _parse_into(tree, joined, sub, result, seen, depth + 1)
            continue
        parsed = parse_line(line)
        if parsed is not None:
            name, extras = parsed
            result.dependencies.append(Dependency(name, extras, f"{path}:{number}"))
