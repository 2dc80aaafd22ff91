"""Source archives: pack a project directory for upload, unpack an upload safely.

`pack` decides *which* files travel (for a git checkout: what git tracks plus uncommitted and
untracked-but-not-ignored files; otherwise everything except VCS, virtualenv, node and bytecode
folders). Symlinks travel as symlinks; their targets are never read.

`unpack` refuses, before writing anything: absolute member names, ``..`` components, device
files, FIFOs, hard links, symlinks whose target leaves the tree, more members or more bytes than
the limits allow. A ``leak -> /etc/shadow`` member is refused, never copied.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from phemeral.build import scope
from phemeral.errors import SourceError

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__"})
MAX_NAME_BYTES = 4096


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 1 << 30  # uncompressed
    max_files: int = 50_000


@dataclass(frozen=True)
class ArchiveStats:
    files: int
    bytes: int

    def describe(self) -> str:
        return f"{self.files} files, {human_bytes(self.bytes)}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# -- packing ------------------------------------------------------------------------------------


def files_to_pack(root: Path) -> list[str]:
    """Relative POSIX paths (files and symlinks) that `pack` puts in the archive, sorted."""
    if not root.is_dir():
        raise SourceError(f"{root} is not a directory")
    listed = _git_files(root)
    if listed is None:
        listed = list(_walk(root))
    keep = []
    for rel in listed:
        parts = PurePosixPath(rel).parts
        if any(part in SKIPPED_DIRS for part in parts[:-1]) or parts[-1] == ".git":
            continue
        path = root / rel
        if path.is_symlink() or path.is_file():
            keep.append(rel)
    return sorted(set(keep))


def _git_files(root: Path) -> list[str] | None:
    """Files git would ship from ``root`` (tracked + untracked-not-ignored), or None if not git."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    result = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    names = result.stdout.decode("utf-8", "surrogateescape").split("\0")
    # deleted-but-tracked files are listed too; submodules show up as directories: both skipped
    return [n for n in names if n]


def _walk(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep_dirs = []
        for name in dirnames:
            if name in SKIPPED_DIRS:
                continue
            if (here / name).is_symlink():
                filenames.append(name)  # a symlink to a directory travels as a symlink
            else:
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in filenames:
            yield (here / name).relative_to(root).as_posix()


def pack(root: Path, dest: Path, root_dir: str | None = None) -> ArchiveStats:
    """Write ``root``'s shippable files into the gzip tar ``dest``; never follows symlinks.

    With a project ``root_dir``, only what its build needs (`phemeral.build.scope`)."""
    names = files_to_pack(root)
    if root_dir:
        names = scope.needed_files(names, root_dir, lambda rel: _read_small(root, rel))
    total = 0
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for rel in names:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                total += info.size
                with (root / rel).open("rb") as handle:
                    tar.addfile(info, handle)
            elif info.issym():
                tar.addfile(info)
    return ArchiveStats(files=len(names), bytes=total)


def _read_small(root: Path, rel: str) -> str | None:
    path = root / rel
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# -- unpacking ----------------------------------------------------------------------------------


def check_member(member: tarfile.TarInfo) -> str:
    """The member's normalised relative name, or a SourceError saying why it is refused (pure)."""
    name = member.name
    if "\0" in name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise SourceError(f"archive member {name[:80]!r} has an invalid name")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise SourceError(
            f"archive member {name!r} has an absolute path; only relative paths are allowed"
        )
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise SourceError(f"archive member {name!r} climbs out of the archive with '..'")
    if member.ischr() or member.isblk():
        raise SourceError(f"archive member {name!r} is a device file; device files are not allowed")
    if member.isfifo():
        raise SourceError(
            f"archive member {name!r} is a FIFO; only files, folders and links are allowed"
        )
    if member.islnk():
        raise SourceError(f"archive member {name!r} is a hard link; hard links are not allowed")
    if not (member.isreg() or member.isdir() or member.issym()):
        raise SourceError(f"archive member {name!r} has an unsupported type")
    rel = "/".join(parts)
    if member.issym():
        target = member.linkname
        if not target or target.startswith("/"):
            raise SourceError(
                f"symlink {rel!r} points to {target!r}, outside the project; links must stay inside"
            )
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if resolved == ".." or resolved.startswith("../"):
            raise SourceError(
                f"symlink {rel!r} points to {target!r}, outside the project; links must stay inside"
            )
    return rel


def unpack(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> ArchiveStats:
    """Check every member of the gzip tar ``archive`` against the rules, then extract into
    ``dest`` (created empty). Nothing is written when any member is refused."""
    limits = limits or ArchiveLimits()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            seen: set[str] = set()
            for member in tar:
                if len(members) >= limits.max_files:
                    raise SourceError(
                        f"the archive has more than {limits.max_files} entries; "
                        "leave build outputs, dependencies and data out of the upload"
                    )
                rel = check_member(member)
                if not rel:
                    continue  # the "./" entry
                total += member.size if member.isreg() else 0
                if total > limits.max_bytes:
                    raise SourceError(
                        f"the archive unpacks to more than {human_bytes(limits.max_bytes)}; "
                        "leave build outputs, dependencies and data out of the upload"
                    )
                if rel in seen:
                    raise SourceError(f"archive member {rel!r} appears twice")
                seen.add(rel)
                member.name = rel
                members.append(member)
            _check_no_link_parents(members)
            dest.mkdir(parents=True, exist_ok=True)
            # filter="data" is the second guard (PEP 706): it rechecks links and strips modes
            tar.extractall(dest, members=members, filter="data")
        _check_links_resolve_inside(dest, [m.name for m in members if m.issym()])
    except SourceError:
        raise
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        raise SourceError(f"the archive cannot be read: {exc}") from exc
    files = sum(1 for m in members if not m.isdir())
    return ArchiveStats(files=files, bytes=total)


def _check_links_resolve_inside(dest: Path, links: list[str]) -> None:
    """With every link in place, each must still resolve inside ``dest`` (chains of links can
    escape where each one alone looks harmless); otherwise the whole tree is removed."""
    top = dest.resolve()
    for rel in links:
        real = Path(os.path.realpath(dest / rel))
        if real != top and top not in real.parents:
            _remove_tree(dest)
            raise SourceError(
                f"symlink {rel!r} resolves outside the project; links must stay inside"
            )


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _check_no_link_parents(members: list[tarfile.TarInfo]) -> None:
    """Refuse members written *through* a symlink (``link/x`` where ``link`` is a member link)."""
    links = {m.name for m in members if m.issym()}
    for member in members:
        parents = PurePosixPath(member.name).parents
        for parent in parents:
            if str(parent) in links:
                raise SourceError(
                    f"archive member {member.name!r} is written through the symlink {str(parent)!r}"
                )
