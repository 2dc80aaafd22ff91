"""Identical shared libraries of different releases become one file, so one page cache.

Each release has a venv of its own: the same wheel's extension module installed by a thousand
projects is a thousand files, and every template maps its own copy, so the page cache holds a
thousand copies of the same pages (`pydantic_core` alone: 2.7 MiB per FastAPI project at zero).
After a build, `share` replaces each shared library of the release's venv (a name with ``.so``,
at least `MIN_BYTES`) by a hard link to a root-owned, read-only (0555) file under
``{data_dir}/shared-files`` named by the SHA-256 of its content: same content, same inode, one
copy of its pages in memory for every template that maps it.

- A stored file is the copy that was hashed (copied into the store, named by the hash of the
  bytes copied), never the app's own file: its name always matches its content, whatever the
  app uid does meanwhile.
- Nobody can change it: root owns it, its mode is 0555, the store is 0700 (root), and
  sandboxes bind venvs read-only anyway. What is shared is public (a wheel's file), as the
  system libraries every sandbox maps from ``/usr`` already are.
- Root only (hard links to root-owned files); otherwise, or across file systems, nothing
  changes. `remove_unused` deletes the entries no release links any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

__all__ = ["MIN_BYTES", "SharedFiles", "remove_unused", "share"]

MIN_BYTES = 64 * 1024
CHUNK = 1 << 20


class SharedFiles:
    """What `share` did: files linked and their bytes."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def describe(self) -> str:
        return (
            f"{self.files} shared librar{'y' if self.files == 1 else 'ies'} "
            f"({self.bytes / 1048576:.1f} MB) linked to one copy shared by identical releases"
        )


def share(venv: Path, store: Path) -> SharedFiles:
    """Link every shared library of ``venv`` to its content's file in ``store`` (root only)."""
    done = SharedFiles()
    if os.geteuid() != 0 or not venv.is_dir():
        return done
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    store.chmod(0o700)
    for dirpath, _dirnames, filenames in os.walk(venv):
        for name in filenames:
            if not (name.endswith(".so") or ".so." in name):
                continue
            path = Path(dirpath) / name
            try:
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode) or info.st_size < MIN_BYTES:
                    continue
                if _link(path, store):
                    done.files += 1
                    done.bytes += info.st_size
            except OSError:
                continue  # left as it is (another file system, a race with the store's cleanup)
    return done


def _link(path: Path, store: Path) -> bool:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    target = store / digest.hexdigest()
    if not target.exists():
        target = _store(path, store)
    link = path.with_name(f".{path.name}.{os.urandom(4).hex()}.link")
    os.link(target, link)
    try:
        link.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            link.unlink()
        raise
    return True


def _store(path: Path, store: Path) -> Path:
    """Copy ``path`` into the store under the hash of the bytes copied (what the venv will
    link is this copy, whatever happens to ``path`` meanwhile); the stored file."""
    tmp = store / f".{os.getpid()}-{os.urandom(6).hex()}.tmp"
    digest = hashlib.sha256()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with path.open("rb") as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        target = store / digest.hexdigest()
        if target.exists():
            tmp.unlink()
        else:
            tmp.chmod(0o555)
            tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def remove_unused(store: Path) -> int:
    """Delete the files no venv links any more (and leftover temporary files); how many."""
    removed = 0
    if not store.is_dir():
        return 0
    for entry in store.iterdir():
        with contextlib.suppress(OSError):
            if entry.name.endswith(".tmp") or entry.lstat().st_nlink <= 1:
                entry.unlink()
                removed += 1
    return removed
