"""A project's package cache, which no build can poison.

Layout under ``{data_dir}/cache`` (root-owned folders 0711: traversable, not listable):

    projects/<uid>/uv        the project's uv cache (the *base*), owned by the app uid, 0700,
                             written only by the platform's prefetch (`install.prefetch`: uv with
                             ``--no-build``, so no code of the project runs while it is writable)
    projects/<uid>/keys      root-owned markers: which dependency sets the base already holds
    overlays/<deployment>/   one build's view: an overlay mount ``merged`` with the base as its
                             read-only lower layer and ``upper`` (the app uid's, 0700) on top;
                             whatever the build writes (downloads, built sdists, anything its
                             setup.py plants) lands in ``upper`` and is thrown away afterwards

The key is the project's uid, which is never handed out again (`store.counters`), so a deleted
project's cache can never reach another project; `remove_project` deletes it with the project.

Without root (no overlay mounts) the build writes the base directly: a project's builds can then
poison that project's later builds (documented in docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectCache:
    """A project's base cache (``uv``) and the platform's markers for it (``keys``)."""

    uv: Path
    keys: Path


def root(data_dir: Path) -> Path:
    return data_dir / "cache"


def project_dir(data_dir: Path, uid: int | None) -> Path:
    return root(data_dir) / "projects" / (str(uid) if uid is not None else "shared")


def overlay_dir(data_dir: Path, deployment_id: str) -> Path:
    return root(data_dir) / "overlays" / deployment_id


def overlays_supported(uid: int | None) -> bool:
    return uid is not None and os.geteuid() == 0


def prepare_project(data_dir: Path, uid: int | None) -> ProjectCache:
    """Create the project's base (the app uid's, 0700) and key folders (root's, 0700)."""
    project = project_dir(data_dir, uid)
    for folder in (root(data_dir), project.parent, project):
        _root_folder(folder)
    keys = project / "keys"
    _root_folder(keys, mode=0o700)
    base = project / "uv"
    _owned_folder(base, uid)
    return ProjectCache(uv=base, keys=keys)


def mount_view(uid: int | None, base: Path, overlay: Path) -> Path:
    """The cache folder a build's own code may write: an overlay over the read-only ``base``
    whose writable layers live in ``overlay`` (as root), else ``base`` itself."""
    if not overlays_supported(uid):
        return base
    _root_folder(overlay.parent)
    unmount(overlay)
    _root_folder(overlay)
    upper, work, merged = overlay / "upper", overlay / "work", overlay / "merged"
    _owned_folder(upper, uid)
    _root_folder(work, mode=0o700)
    _root_folder(merged)
    options = f"lowerdir={base},upperdir={upper},workdir={work},nosuid,nodev"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        check=True,
        capture_output=True,
    )
    return merged


def unmount(overlay: Path) -> None:
    """Unmount a build's overlay (if mounted) and remove everything the build wrote."""
    merged = overlay / "merged"
    if os.path.ismount(merged):
        subprocess.run(["umount", "-l", str(merged)], check=False, capture_output=True)
    shutil.rmtree(overlay, ignore_errors=True)


def remove_leftovers(data_dir: Path) -> None:
    """Overlays a previous process left mounted (a crash mid-build), and the cache layout of
    earlier versions (per-uid folders written by builds themselves)."""
    overlays = root(data_dir) / "overlays"
    if overlays.is_dir():
        for overlay in overlays.iterdir():
            unmount(overlay)
    for legacy in ("uv", "keys"):
        shutil.rmtree(root(data_dir) / legacy, ignore_errors=True)


def remove_project(data_dir: Path, uid: int | None) -> None:
    """Delete a project's cache (with the project)."""
    if uid is not None:
        shutil.rmtree(project_dir(data_dir, uid), ignore_errors=True)


def _root_folder(path: Path, mode: int = 0o711) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(path, 0, 0)
    path.chmod(mode)


def _owned_folder(path: Path, uid: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    if uid is not None and os.geteuid() == 0:
        st = path.stat()
        if st.st_uid != uid:
            os.chown(path, uid, uid)
