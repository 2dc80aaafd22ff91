"""A build's disk quota: its own loop-mounted ext4 file system.

Everything a build may write on disk lives in one image of ``build_disk_mb`` (sparse: it costs
only what is written), mounted at ``{data_dir}/workspaces/<deployment>`` (nosuid, nodev):

    release/    bind-mounted at the release folder for the build (paths stay the final ones:
                venvs are not relocatable), copied out to the real folder once the build
                succeeded
    cache/      the build's package-cache overlay (downloads, built sdists)

A build that writes more gets ENOSPC, and `full` lets the builder say so plainly. The image is
deleted after the build either way. Needs root (mount); without it builds have no disk quota.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FULL_FREE_BYTES = 4 << 20  # under this much free space the quota is what stopped the build


@dataclass(frozen=True)
class Workspace:
    image: Path
    mount: Path
    release_dir: Path
    size_mb: int
    baseline: list[int] = field(default_factory=list)  # free bytes once made (file system's own)

    def used_mb(self) -> int:
        """What the build wrote (the file system's own metadata left out)."""
        start = self.baseline[0] if self.baseline else self.size_mb << 20
        return max(0, start - self.free_bytes()) >> 20

    @property
    def release(self) -> Path:
        return self.mount / "release"

    @property
    def cache(self) -> Path:
        return self.mount / "cache"

    def free_bytes(self) -> int:
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def full(self) -> bool:
        try:
            return self.free_bytes() < FULL_FREE_BYTES
        except OSError:
            return False


def supported(size_mb: int) -> bool:
    return size_mb > 0 and os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None


def root(data_dir: Path) -> Path:
    return data_dir / "workspaces"


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv[:2])} failed: {result.stderr.strip()[-300:]}")


def create(data_dir: Path, deployment_id: str, release_dir: Path, size_mb: int) -> Workspace:
    """Make, mount and bind the workspace; ``release_dir`` must exist (and be empty)."""
    base = root(data_dir)
    base.mkdir(mode=0o700, exist_ok=True)
    image, mount = base / f"{deployment_id}.img", base / deployment_id
    workspace = Workspace(image=image, mount=mount, release_dir=release_dir, size_mb=size_mb)
    try:
        with image.open("wb") as out:
            out.truncate(size_mb << 20)
        # no journal, no reserved blocks, lazy inode tables: a scratch disk made in milliseconds
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
             "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image))  # fmt: skip
        mount.mkdir(mode=0o711, exist_ok=True)
        _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(mount))
        mount.chmod(0o711)
        workspace.baseline.append(workspace.free_bytes())
        workspace.release.mkdir(mode=0o711)
        workspace.cache.mkdir(mode=0o711)
        _run("mount", "--bind", str(workspace.release), str(release_dir))
    except BaseException:
        remove(workspace)
        raise
    return workspace


def keep_release(workspace: Workspace) -> None:
    """Copy the finished release out of the image to its real folder (same path, same modes)."""
    _unmount(workspace.release_dir)
    _run("cp", "-a", "--", f"{workspace.release}/.", str(workspace.release_dir))


def remove(workspace: Workspace) -> None:
    """Unmount everything and delete the image (what the build wrote there is gone)."""
    _unmount(workspace.release_dir)
    _unmount(workspace.cache / "merged")
    _unmount(workspace.mount)
    with contextlib.suppress(OSError):
        workspace.mount.rmdir()
    workspace.image.unlink(missing_ok=True)


def _unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def mounts_under(folder: Path, mountinfo: str) -> list[Path]:
    """Mount points at or below ``folder`` in a /proc/self/mountinfo text, deepest first (pure)."""
    found = []
    prefix = str(folder).rstrip("/") + "/"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if point == str(folder) or point.startswith(prefix):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def remove_leftovers(data_dir: Path) -> None:
    """What a crashed process left of its builds (this data dir only): the binds on release
    folders of builds that had a workspace, build overlays, workspace mounts and images."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return
    base = root(data_dir)
    images = {p.stem for p in base.glob("*.img")} if base.is_dir() else set()
    points = [
        point
        for point in mounts_under(data_dir / "apps", mountinfo)
        if point.parent.name == "releases" and point.name in images
    ]
    points += mounts_under(data_dir / "cache" / "overlays", mountinfo)
    points += mounts_under(base, mountinfo)
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
    if base.is_dir():
        shutil.rmtree(base, ignore_errors=True)
