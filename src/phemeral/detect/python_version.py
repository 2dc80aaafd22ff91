"""Which Python ``major.minor`` a project runs on, and the file that says so.

Precedence: project setting > ``.python-version`` (project dir, then each parent up to the
repository root) > ``runtime.txt`` > ``.tool-versions`` / ``mise.toml`` > ``requires-python`` >
``uv.lock`` > Pipfile > Poetry ``python`` > platform default. Where none of these pins a version,
another platform's file that does is used when every range present allows it: a Dockerfile's
``FROM python:X.Y`` (the last stage that names one) or App Engine's ``runtime: pythonXY``.
A pinned version is used as is
(``3.12``, ``3.12.4``, ``python-3.12.4``); a range resolves to the default when it allows it,
else to the newest available minor that does. The choice is then checked against every range
present: a conflict is a `DetectionError` naming both files. A lower-ranked pin that disagrees
is a warning.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field

from phemeral.detect.manifests import Lockfile, Pipfile, Pyproject, join
from phemeral.detect.pyversions import (
    KNOWN_MINORS,
    Constraint,
    describe,
    exact_minor,
    minor_key,
    parse_pep440,
    parse_poetry,
    satisfies,
)
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError

_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f\u00a0\u200b-\u200f\u2028\u2029\ufeff]")
_PREFIX = re.compile(r"^(?:c?python)[-@ ]?", re.IGNORECASE)
_MISSPELT = (
    "python-version",
    ".python_version",
    ".python-version.txt",
    ".pythonversion",
    ".python-versions",
    "python_version",
    ".python",
)
FIX_HINT = "Put the version in .python-version (e.g. `3.12`) or set the project's python_version."


@dataclass
class Pin:
    minor: str
    source: str  # "file:line"


@dataclass
class Range:
    constraint: Constraint
    text: str
    source: str


@dataclass
class VersionDecision:
    version: str
    source: str  # the file (or "project setting" / "platform default")
    location: str  # file:line where it helps
    warnings: list[str] = field(default_factory=list)


def _clean_version_line(raw: str) -> str:
    line = _INVISIBLE.sub("", raw).strip().strip("\"'")
    return _PREFIX.sub("", line).strip()


def read_python_version_file(tree: SourceTree, path: str) -> Pin | None:
    text = tree.read_text(path)
    if text is None:
        return None
    lines = [
        (n, _clean_version_line(raw))
        for n, raw in enumerate(text.split("\n"), start=1)
        if _clean_version_line(raw) and not _clean_version_line(raw).startswith("#")
    ]
    if not lines:
        raise DetectionError(
            f"{path} is empty. Looked for a Python version such as `3.12` on its first line; "
            f"found nothing. {FIX_HINT}"
        )
    number, value = lines[0]
    minor = exact_minor(value)
    if minor is None:
        raise DetectionError(
            f"{path}:{number} says {value!r}, which is not a Python version. Looked for `X.Y` or "
            f"`X.Y.Z` (pyenv environment names, `system`, free-threaded or PyPy builds are not "
            f"supported). Write e.g. `3.12` in {path}."
        )
    return Pin(minor, f"{path}:{number}")


def read_runtime_txt(tree: SourceTree, path: str) -> Pin | None:
    text = tree.read_text(path)
    if text is None:
        return None
    for number, raw in enumerate(text.split("\n"), start=1):
        value = _clean_version_line(raw)
        if not value or value.startswith("#"):
            continue
        minor = exact_minor(value)
        if minor is None:
            raise DetectionError(
                f"{path}:{number} says {value!r}; looked for `python-X.Y.Z`. {FIX_HINT}"
            )
        return Pin(minor, f"{path}:{number}")
    return None


def read_tool_versions(tree: SourceTree, path: str, warnings: list[str]) -> Pin | None:
    text = tree.read_text(path)
    if text is None:
        return None
    for number, raw in enumerate(text.split("\n"), start=1):
        words = _INVISIBLE.sub("", raw.split("#", 1)[0]).split()
        if len(words) >= 2 and words[0] == "python":
            minor = exact_minor(_PREFIX.sub("", words[1]))
            if minor is None:
                warnings.append(f"{path}:{number} python {words[1]!r} is not a version; ignored")
                return None
            return Pin(minor, f"{path}:{number}")
    return None


def read_mise(tree: SourceTree, path: str, warnings: list[str]) -> Pin | None:
    text = tree.read_text(path)
    if text is None:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        warnings.append(f"{path} is not valid TOML ({exc}); ignored")
        return None
    tools = data.get("tools")
    value = tools.get("python") if isinstance(tools, dict) else None
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("version")
    if not isinstance(value, str):
        return None
    line = next(
        (n for n, raw in enumerate(text.split("\n"), 1) if re.match(r"\s*python\s*=", raw)), 0
    )
    minor = exact_minor(_PREFIX.sub("", value))
    if minor is None:
        warnings.append(f"{path}:{line} python = {value!r} is not a pinned version; ignored")
        return None
    return Pin(minor, f"{path}:{line}" if line else path)


_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", re.IGNORECASE | re.MULTILINE)
_IMAGE_PYTHON = re.compile(r"(?:^|/)python:(\d+\.\d+)|[:-]python-?(\d+\.\d+)")
_APP_ENGINE = re.compile(r"^runtime:\s*[\"']?python(3)(\d+)[\"']?\s*(?:#.*)?$", re.MULTILINE)


def read_dockerfile(tree: SourceTree, path: str) -> Pin | None:
    """The Python of the last ``FROM`` naming a python image (``ARG`` defaults expanded)."""
    text = tree.read_text(path)
    if text is None:
        return None
    args = {m.group(1): m.group(2).strip("\"'") for m in _ARG.finditer(text)}
    found: Pin | None = None
    for match in _FROM.finditer(text):
        image = re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""), match.group(1)
        )
        version = _IMAGE_PYTHON.search(image)
        if version:
            line = text.count("\n", 0, match.start()) + 1
            found = Pin(version.group(1) or version.group(2), f"{path}:{line}")
    return found


def read_app_yaml(tree: SourceTree, path: str) -> Pin | None:
    """App Engine standard's ``runtime: python312`` → 3.12."""
    text = tree.read_text(path)
    match = _APP_ENGINE.search(text) if text else None
    if text is None or match is None:
        return None
    line = text.count("\n", 0, match.start()) + 1
    return Pin(f"{match.group(1)}.{match.group(2)}", f"{path}:{line}")


def _platform_hint(tree: SourceTree, project_dir: str) -> Pin | None:
    """Another platform's file that pins the version (the project dir, then its parents)."""
    for directory in _parents(project_dir):
        for name in ("Dockerfile", "app.yaml"):
            path = join(directory, name)
            pin = read_dockerfile(tree, path) if name == "Dockerfile" else read_app_yaml(tree, path)
            if pin is not None:
                return pin
    return None


def _parents(project_dir: str) -> list[str]:
    """The project dir, then each parent up to the repository root ("")."""
    dirs = [project_dir]
    while dirs[-1]:
        dirs.append(dirs[-1].rpartition("/")[0])
    return dirs


def _file_of(source: str) -> str:
    return source.rsplit(":", 1)[0] if re.search(r":\d+$", source) else source


def decide_python_version(
    tree: SourceTree,
    project_dir: str,
    *,
    pyproject: Pyproject | None,
    uv_lock: Lockfile | None,
    pipfile: Pipfile | None,
    override: str | None,
    available_versions: Sequence[str],
    default_version: str,
) -> VersionDecision:
    warnings: list[str] = []
    available = sorted(
        {m for v in available_versions if (m := exact_minor(v))} or set(KNOWN_MINORS),
        key=minor_key,
        reverse=True,
    )
    default = exact_minor(default_version) or available[0]

    pins: list[Pin] = []
    if override:
        minor = exact_minor(_clean_version_line(override))
        if minor is None:
            raise DetectionError(
                f"The project setting python_version is {override!r}; looked for `X.Y` or "
                "`X.Y.Z`. Change the setting to e.g. `3.12`."
            )
        pins.append(Pin(minor, "project setting"))
    for directory in _parents(project_dir):
        pin = read_python_version_file(tree, join(directory, ".python-version"))
        if pin:
            pins.append(pin)
            break
        for wrong in _MISSPELT:
            if tree.is_file(join(directory, wrong)):
                warnings.append(
                    f"{join(directory, wrong)} is not read; the file must be named .python-version"
                )
    pin = read_runtime_txt(tree, join(project_dir, "runtime.txt"))
    if pin:
        pins.append(pin)
    for reader, name in (
        (read_tool_versions, ".tool-versions"),
        (read_mise, "mise.toml"),
        (read_mise, ".mise.toml"),
        (read_mise, ".config/mise.toml"),
    ):
        pin = reader(tree, join(project_dir, name), warnings)
        if pin:
            pins.append(pin)
            break

    ranges: list[Range] = []
    req_range = lock_range = poetry_range = None
    if pyproject and pyproject.requires_python:
        req_range = _add_range(
            ranges, warnings, pyproject.requires_python, pyproject.requires_python_source
        )
    if uv_lock and uv_lock.requires_python:
        lock_range = _add_range(
            ranges, warnings, uv_lock.requires_python, uv_lock.requires_python_source
        )
    pipfile_pin: Pin | None = None
    if pipfile and pipfile.python_version:
        minor = exact_minor(pipfile.python_version)
        if minor:
            pipfile_pin = Pin(minor, pipfile.python_version_source)
    if pyproject and pyproject.poetry_python:
        constraint = parse_poetry(pyproject.poetry_python)
        if constraint is None:
            warnings.append(
                f"{pyproject.poetry_python_source}: python = {pyproject.poetry_python!r} "
                "cannot be read as a version constraint; ignored"
            )
        else:
            poetry_range = Range(
                constraint, pyproject.poetry_python, pyproject.poetry_python_source
            )
            ranges.append(poetry_range)

    chosen: Pin
    leading = req_range or lock_range
    hint = None if pins or pipfile_pin else _platform_hint(tree, project_dir)
    if hint is not None and (
        hint.minor not in KNOWN_MINORS
        or (available_versions and hint.minor not in available)
        or not all(satisfies(rng.constraint, hint.minor) for rng in ranges)
    ):
        warnings.append(
            f"{_file_of(hint.source)} runs Python {hint.minor}, which is not used: it is not "
            "installed here or conflicts with the project's own requirement"
        )
        hint = None
    if pins:
        chosen = pins[0]
    elif hint is not None:
        chosen = hint
    elif leading is not None:
        chosen = _resolve_range(leading, available, default)
    elif pipfile_pin:
        chosen = pipfile_pin
    elif poetry_range:
        chosen = _resolve_range(poetry_range, available, default)
    else:
        fallback = default if default in available or not available_versions else available[0]
        chosen = Pin(fallback, "platform default")

    if chosen.minor not in KNOWN_MINORS:
        # only the versions a build may use: older interpreters on the machine are not offered
        usable = sorted((m for m in available if m in KNOWN_MINORS), key=minor_key)
        raise DetectionError(
            f"{_file_of(chosen.source)} asks for Python {chosen.minor}, which is not supported. "
            f"Supported: {KNOWN_MINORS[0]}–{KNOWN_MINORS[-1]}; this platform has "
            f"{', '.join(usable) or 'none of them installed'}. Change {_file_of(chosen.source)}."
        )
    if available_versions and chosen.minor not in available:
        warnings.append(
            f"Python {chosen.minor} ({_file_of(chosen.source)}) is not installed on this platform "
            f"(it has {', '.join(sorted(available, key=minor_key))}); the build tries to install it"
        )
    for other in pins[1:] + ([pipfile_pin] if pipfile_pin else []):
        if other is not chosen and other.minor != chosen.minor:
            warnings.append(
                f"{_file_of(other.source)} asks for Python {other.minor}, but "
                f"{_file_of(chosen.source)} wins with {chosen.minor}; remove or update "
                f"{_file_of(other.source)}"
            )
    if any(_file_of(p.source).endswith("runtime.txt") for p in pins):
        warnings.append("runtime.txt is a legacy version file; prefer .python-version")
    for rng in ranges:
        if not satisfies(rng.constraint, chosen.minor):
            raise DetectionError(
                f"Python {chosen.minor} from {_file_of(chosen.source)} conflicts with "
                f"{_file_of(rng.source)}, which requires {rng.text!r}. Make them agree: change "
                f"{_file_of(chosen.source)} or the requirement in {_file_of(rng.source)}."
            )
        wanted = rng.text.strip()[2:].strip()
        tilde = rng.text.strip().startswith("~=") and exact_minor(wanted) == wanted
        if tilde and wanted != chosen.minor:
            warnings.append(
                f"{_file_of(rng.source)}: {rng.text!r} allows {wanted} and every later 3.x, so "
                f"{chosen.minor} was chosen; pin .python-version if you meant {wanted}"
            )
    return VersionDecision(
        version=chosen.minor,
        source=_file_of(chosen.source),
        location=chosen.source,
        warnings=warnings,
    )


def _add_range(ranges: list[Range], warnings: list[str], text: str, source: str) -> Range | None:
    constraint = parse_pep440(text)
    if constraint is None:
        warnings.append(f"{source}: {text!r} is not a valid PEP 440 version range; ignored")
        return None
    rng = Range(constraint, text, source)
    ranges.append(rng)
    return rng


def _resolve_range(rng: Range, available: list[str], default: str) -> Pin:
    """The default when the range allows it, else the newest available minor that it allows."""
    if default in available and satisfies(rng.constraint, default):
        return Pin(default, rng.source)
    for minor in available:
        if satisfies(rng.constraint, minor):
            return Pin(minor, rng.source)
    raise DetectionError(
        f"{_file_of(rng.source)} requires Python {describe(rng.constraint)}, but this platform "
        f"has {', '.join(sorted(available, key=minor_key))}. Widen the requirement or pin an "
        "available version in .python-version."
    )
