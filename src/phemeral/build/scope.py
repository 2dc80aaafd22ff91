"""Which files of a checkout a build with a ``root_dir`` needs (pure).

``phemeral deploy`` of a monorepo whose project sets ``root_dir`` uploads only:

- everything under ``root_dir``;
- from each folder above it, the files detection reads there (``.python-version``, another
  platform's ``Dockerfile`` / ``app.yaml``, ``phemeral.toml``, ``Procfile`` and the other
  platforms' files that declare commands);
- a uv workspace above it (``[tool.uv.workspace]`` beside ``uv.lock``): the whole workspace,
  since ``uv sync --locked`` checks every member and path dependencies live there;
- files and folders that ``root_dir``'s requirements files reach outside it (``-r ../base.txt``,
  ``-e ../lib``, ``file:../lib``), and path dependencies in its ``pyproject.toml``.

Paths keep their place in the tree, so the build sees the same layout as a full checkout.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable

PARENT_FILES = (
    ".python-version",
    "Dockerfile",
    "app.yaml",
    # what the repository declares (detect.declared reads the repository root's too)
    "phemeral.toml",
    "Procfile",
    "railway.json",
    "railway.toml",
    "render.yaml",
    "heroku.yml",
    "app.json",
)
_REQ_REF = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint|-e|--editable)\s*=?\s*(\S+)")
_PATH_LIKE = re.compile(r"(?:file:|^)(\.{1,2}/\S*)")
_PYPROJECT_PATH = re.compile(r"""path\s*=\s*["']([^"']+)["']""")


def _under(path: str, folder: str) -> bool:
    return folder in ("", ".") or path == folder or path.startswith(folder + "/")


def _ancestors(folder: str) -> list[str]:
    out = []
    while folder:
        folder = posixpath.dirname(folder)
        out.append(folder)
    return out


def needed_files(
    files: Iterable[str], root_dir: str, read_text: Callable[[str], str | None]
) -> list[str]:
    """The subset of ``files`` (POSIX, relative to the checkout) a ``root_dir`` build needs."""
    all_files = sorted(set(files))
    root_dir = root_dir.strip().strip("/")
    if root_dir in ("", "."):
        return all_files
    folders = [root_dir]
    for parent in _ancestors(root_dir):
        lock = posixpath.join(parent, "uv.lock") if parent else "uv.lock"
        manifest = posixpath.join(parent, "pyproject.toml") if parent else "pyproject.toml"
        text = read_text(manifest) if lock in all_files else None
        if text is not None and "[tool.uv.workspace]" in text:
            folders.append(parent)
    pending = [f for f in all_files if _under(f, root_dir)]
    extra_files: set[str] = set()
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        name = posixpath.basename(path)
        if not (name.endswith(".txt") or name in ("pyproject.toml", "setup.py", "Pipfile")):
            continue
        text = read_text(path) or ""
        for target in _references(path, text):
            if target is None or target.startswith(".."):
                continue
            if target in all_files:
                extra_files.add(target)
                pending.append(target)
            elif any(_under(f, target) for f in all_files):
                folders.append(target)
                pending.extend(f for f in all_files if _under(f, target))
    parents = {
        posixpath.join(parent, name) if parent else name
        for parent in _ancestors(root_dir)
        for name in PARENT_FILES
    }
    return [
        f
        for f in all_files
        if f in parents or f in extra_files or any(_under(f, folder) for folder in folders)
    ]


def _references(path: str, text: str) -> list[str | None]:
    """Paths (relative to the checkout) a requirements file or pyproject.toml points at."""
    here = posixpath.dirname(path)
    found: list[str | None] = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        candidates = []
        match = _REQ_REF.match(line)
        if match:
            candidates.append(match.group(1))
        candidates += [m.group(1) for m in _PATH_LIKE.finditer(line)]
        if path.endswith(("pyproject.toml", "Pipfile")):
            candidates += _PYPROJECT_PATH.findall(line)
        for ref in candidates:
            if "://" in ref and not ref.startswith("file:"):
                continue
            ref = ref.removeprefix("file:").split("#", 1)[0].split("[", 1)[0]
            found.append(posixpath.normpath(posixpath.join(here, ref)))
    return found
