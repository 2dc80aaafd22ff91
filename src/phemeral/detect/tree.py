# ruff: noqa: PTH114, PTH116, PTH118 - string-level os calls (realpath, O_NOFOLLOW) are the point
"""A bounded, symlink-safe, read-only view of a source tree.

Detection only ever reads user files through `SourceTree`: each file is read once (cached), at
most `max_file_bytes` of it; a path that leaves the root — by ``..`` or through a symlink whose
target lies outside — reads as absent; walks skip virtualenvs, VCS and dependency folders and
stop after `max_walk_entries` entries. Nothing here imports or executes what it reads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 1024 * 1024
MAX_WALK_ENTRIES = 5000

# Folders that never hold the project's own code or manifests.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".env",
        "env",
        "virtualenv",
        "node_modules",
        "site-packages",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".tox",
        ".nox",
        ".idea",
        ".vscode",
        "build",
        "dist",
        ".eggs",
    }
)


def clean_relpath(rel: str) -> str | None:
    """``a/b/c`` normalised, or None if it is absolute or climbs out with ``..``."""
    parts: list[str] = []
    for part in PurePosixPath(rel.replace("\\", "/")).parts:
        if part in ("", "."):
            continue
        if part == ".." or part.startswith("/"):
            return None
        parts.append(part)
    return "/".join(parts)


class SourceTree:
    """Read-only access to the files under ``root``; every path argument is POSIX and relative."""

    def __init__(
        self,
        root: Path,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_walk_entries: int = MAX_WALK_ENTRIES,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.max_file_bytes = max_file_bytes
        self.max_walk_entries = max_walk_entries
        self.too_large: list[str] = []
        self.opened: list[str] = []  # absolute paths actually opened, for audits and tests
        self._text: dict[str, str | None] = {}
        self._real: dict[str, str | None] = {}
        self._listing: dict[str, list[tuple[str, bool]]] = {}
        self.memo: dict[str, object] = {}  # per-tree caches of derived facts (parsed projects)

    # -- path resolution -------------------------------------------------------------------

    def _realpath(self, rel: str) -> str | None:
        """The real absolute path of ``rel`` if it exists inside the root, else None."""
        if rel in self._real:
            return self._real[rel]
        clean = clean_relpath(rel)
        real: str | None = None
        if clean is not None:
            candidate = (
                os.path.realpath(os.path.join(self.root, clean)) if clean else str(self.root)
            )
            root = str(self.root)
            if (candidate == root or candidate.startswith(root + os.sep)) and os.path.lexists(
                candidate
            ):
                real = candidate
        self._real[rel] = real
        return real

    def is_file(self, rel: str) -> bool:
        real = self._realpath(rel)
        if real is None:
            return False
        try:
            return stat.S_ISREG(os.stat(real).st_mode)
        except OSError:
            return False

    def is_dir(self, rel: str) -> bool:
        real = self._realpath(rel)
        if real is None:
            return False
        try:
            return stat.S_ISDIR(os.stat(real).st_mode)
        except OSError:
            return False

    # -- reading ---------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes | None:
        """At most ``max_file_bytes`` of a regular file inside the root; None if absent/too big."""
        real = self._realpath(rel)
        if real is None:
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            self.opened.append(real)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(data) > self.max_file_bytes:
            self.too_large.append(clean_relpath(rel) or rel)
            return None
        return data

    def read_text(self, rel: str) -> str | None:
        """The file decoded as text (BOM and UTF-16 handled, CRLF → LF); None if unreadable."""
        if rel in self._text:
            return self._text[rel]
        data = self.read_bytes(rel)
        text = None if data is None else decode(data)
        self._text[rel] = text
        return text

    # -- listing ---------------------------------------------------------------------------

    def listdir(self, rel: str = "") -> list[tuple[str, bool]]:
        """Sorted ``(name, is_dir)`` entries of a directory inside the root; [] if none.

        Symlinks are listed only when they stay inside the root.
        """
        key = clean_relpath(rel)
        if key is None:
            return []
        if key in self._listing:
            return self._listing[key]
        real = self._realpath(key)
        entries: list[tuple[str, bool]] = []
        if real is not None:
            try:
                with os.scandir(real) as it:
                    raw = sorted(it, key=lambda e: e.name)[: self.max_walk_entries]
            except OSError:
                raw = []
            for entry in raw:
                child = f"{key}/{entry.name}" if key else entry.name
                try:
                    if entry.is_symlink():
                        if self._realpath(child) is None:
                            continue
                        entries.append((entry.name, self.is_dir(child)))
                    else:
                        entries.append((entry.name, entry.is_dir(follow_symlinks=False)))
                except OSError:
                    continue
        self._listing[key] = entries
        return entries

    def walk_files(self, rel: str = "", *, max_depth: int = 4, suffix: str = "") -> Iterator[str]:
        """Relative paths of files under ``rel`` (depth-first, sorted), skipping `SKIP_DIRS`.

        Bounded by ``max_depth`` and by ``max_walk_entries`` entries in total; symlinked
        directories are not descended into (no loops).
        """
        budget = self.max_walk_entries
        stack: list[tuple[str, int]] = [(clean_relpath(rel) or "", 0)]
        while stack and budget > 0:
            directory, depth = stack.pop()
            dirs: list[str] = []
            for name, is_dir in self.listdir(directory):
                budget -= 1
                if budget <= 0:
                    return
                child = f"{directory}/{name}" if directory else name
                if is_dir:
                    real = self._realpath(child)
                    linked = real is not None and os.path.islink(os.path.join(self.root, child))
                    if depth < max_depth and name not in SKIP_DIRS and not linked:
                        dirs.append(child)
                elif name.endswith(suffix):
                    yield child
            stack.extend((d, depth + 1) for d in reversed(dirs))


def decode(data: bytes) -> str:
    """Bytes → text: UTF-8 (BOM stripped), UTF-16 with BOM, else Latin-1; newlines normalised."""
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")
