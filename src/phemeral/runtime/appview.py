"""Writable, throwaway views of an app's directory: overlayfs over the immutable release.

Apps write next to their code (``logs/``, a webassets cache, a SQLite file). The release stays
read-only and unchanged; each running process tree writes into its own upper layer, discarded
when it ends (Heroku's, Render's and Railway's ephemeral filesystem):

- **Template** (``base``): an overlay over the release's app directory, mounted when the
  deployment's template is launched (what the app writes while it is imported, and what its
  pre-commands such as ``migrate`` write, lands there), removed when the template is dropped.
- **Instance**: each instance forked from the template gets an overlay of its own *over the
  template's view*, mounted at wake on a shared mount point that the template's sandbox
  received at the app's own path, so it appears there (mount propagation) for the servers the
  template forks next; it is unmounted and deleted when the instance stops. A second instance
  never sees the first one's writes. If the app still holds files of its directory open from
  import (a SQLite database, a log file), instances would write those through the template's
  layer and reopen them in their own: such a deployment's instances share the template's
  layer instead, so one file stays one file.
- **Command** (a start command run as given): one overlay per instance, bound at the app's
  path in the instance's own sandbox.

Only root can mount; without root (or without overlayfs) the app directory stays read-only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self.lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def mount(
        self, source: str | None, target: Path, fstype: str | None, flags: int, data: str | None
    ) -> None:
        result = self.lib.mount(
            source.encode() if source is not None else None,
            str(target).encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        )
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {target}: {os.strerror(code)}")

    def umount(self, target: Path) -> None:
        if self.lib.umount2(str(target).encode(), MNT_DETACH) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOENT):
                raise OSError(code, f"umount {target}: {os.strerror(code)}")


def supported() -> bool:
    """Root, and the kernel has overlayfs."""
    if os.geteuid() != 0:
        return False
    try:
        return "overlay" in Path("/proc/filesystems").read_text().split()
    except OSError:
        return False


@dataclass
class Layer:
    id: str
    dir: Path
    ended: bool = False


@dataclass
class View:
    """One deployment's writable view: the template's layer and the instance layers on it."""

    dir: Path  # views/d/{id}: base/, i-…/, the mount point
    lower: Path  # the release's app directory (host path)
    base: Path | None = None  # the template's merged view, when a template runs
    mountpoint: Path | None = None  # where instance layers are stacked (propagates inward)
    per_instance: bool = True  # False: the app holds files from import open; share the base
    stack: list[Layer] = field(default_factory=list)
    commands: dict[str, Path] = field(default_factory=dict)  # instance id → its layer dir


class AppViews:
    """Creates and removes the overlay views of every deployment (all under ``root``)."""

    def __init__(self, root: Path, *, enabled: bool) -> None:
        self.root = root
        self.enabled = enabled and supported()
        self._libc = _Libc() if self.enabled else None
        self._volatile = True  # until the kernel refuses it (before Linux 5.10)
        self.views: dict[str, View] = {}
        self.shared: dict[str, Path] = {}  # shared template key → its releases view

    # -- the template's layer ------------------------------------------------------------------

    def base(self, deployment_id: str, workdir: Path, uid: int | None) -> Path | None:
        """The deployment's template layer (mounted once); its merged path, or None."""
        if not self.enabled:
            return None
        view = self.views.get(deployment_id)
        if view is not None and view.base is not None:
            return view.base
        if view is None:
            view = View(self.root / "d" / deployment_id, workdir)
            self.views[deployment_id] = view
        base = view.dir / "base"
        try:
            merged = self._overlay(base, workdir, uid)
        except OSError as exc:
            log.warning("no writable app directory for %s: %s", deployment_id, exc)
            return None
        view.base = merged
        return merged

    def attach(self, deployment_id: str, mountpoint: Path | None = None) -> Path | None:
        """Make the template layer appear at ``mountpoint`` (default: a private one) as a shared
        mount, on which instance layers are stacked later; that mount point, or None."""
        view = self.views.get(deployment_id)
        if view is None or view.base is None or self._libc is None:
            return None
        if view.mountpoint is not None:
            return view.mountpoint
        target = mountpoint or view.dir / "app"
        target.mkdir(parents=True, exist_ok=True)
        try:
            self._libc.mount(str(view.base), target, None, MS_BIND, None)
            self._libc.mount(None, target, None, MS_SHARED, None)
        except OSError as exc:
            log.warning("cannot attach the app view of %s: %s", deployment_id, exc)
            return None
        view.mountpoint = target
        return target

    def attach_beside(self, deployment_id: str) -> Path | None:
        """A second shared mount of the template layer, at a private mount point, for a template
        launched beside the current one (`use_mountpoint` once it replaces it); or None."""
        view = self.views.get(deployment_id)
        if view is None or view.base is None or self._libc is None:
            return None
        target = view.dir / f"app-{os.urandom(4).hex()}"
        target.mkdir(parents=True, exist_ok=True)
        try:
            self._libc.mount(str(view.base), target, None, MS_BIND, None)
            self._libc.mount(None, target, None, MS_SHARED, None)
        except OSError as exc:
            log.warning("cannot attach the app view of %s: %s", deployment_id, exc)
            self._umount_all(target)
            return None
        return target

    def use_mountpoint(self, deployment_id: str, mountpoint: Path) -> None:
        """Instance layers are stacked on ``mountpoint`` from now on (its old one unmounted:
        no instance layer may be stacked on it)."""
        view = self.views.get(deployment_id)
        if view is None or self._libc is None:
            return
        if view.mountpoint is not None and view.mountpoint != mountpoint:
            self._umount_all(view.mountpoint)
        view.mountpoint = mountpoint

    def detach(self, mountpoint: Path) -> None:
        """Unmount a mount point `attach_beside` made that was not used after all."""
        if self._libc is not None:
            self._umount_all(mountpoint)

    def shared_releases(self, key: str, releases_dir: Path) -> Path | None:
        """A shared mount of a project's releases dir, for a shared template's sandbox: the
        layers of the deployments forked from it are mounted under it (and so appear inside)."""
        if self._libc is None:
            return None
        if key in self.shared:
            return self.shared[key]
        target = self.root / "s" / hashlib.sha256(key.encode()).hexdigest()[:12] / "releases"
        target.mkdir(parents=True, exist_ok=True)
        try:
            self._libc.mount(str(releases_dir), target, None, MS_BIND, None)
            self._libc.mount(None, target, None, MS_SHARED, None)
        except OSError as exc:
            log.warning("no shared releases view for %s: %s", key, exc)
            with contextlib.suppress(OSError):
                self._libc.umount(target)
            return None
        self.shared[key] = target
        return target

    def close_shared(self, key: str) -> None:
        target = self.shared.pop(key, None)
        if target is not None and self._libc is not None:
            self._umount_all(target)
            shutil.rmtree(target.parent, ignore_errors=True)

    def share_base(self, deployment_id: str) -> bool:
        """Instances of this deployment write into the template's layer (the app holds files of
        its directory open from import); whether a view exists to say so about."""
        view = self.views.get(deployment_id)
        if view is None or view.base is None:
            return False
        view.per_instance = False
        return True

    # -- instance layers -----------------------------------------------------------------------

    def start_instance(self, deployment_id: str, instance_id: str, uid: int | None) -> None:
        """Stack a fresh layer for a template-forked instance (when the view is per instance)."""
        view = self.views.get(deployment_id)
        if view is None or view.base is None or view.mountpoint is None or self._libc is None:
            return
        if not view.per_instance:
            return
        layer = Layer(instance_id, view.dir / instance_id)
        self._dirs(layer.dir, view.lower, uid)
        self._mount_overlay(view.mountpoint, view.base, layer.dir)
        view.stack.append(layer)

    def end_instance(self, deployment_id: str, instance_id: str) -> list[Path]:
        """The instance stopped: its layer goes (once every layer above it went too). The
        directories to delete (the caller deletes them off the event loop)."""
        view = self.views.get(deployment_id)
        if view is None or self._libc is None:
            return []
        gone: list[Path] = []
        command = view.commands.pop(instance_id, None)
        if command is not None:
            self._umount_all(command / "merged")
            gone.append(command)
        for layer in view.stack:
            if layer.id == instance_id:
                layer.ended = True
        while view.stack and view.stack[-1].ended and view.mountpoint is not None:
            layer = view.stack.pop()
            with contextlib.suppress(OSError):
                self._libc.umount(view.mountpoint)
            gone.append(layer.dir)
        return gone

    def command(
        self, deployment_id: str, instance_id: str, workdir: Path, uid: int | None
    ) -> Path | None:
        """A layer for one instance of a command run as given; its merged path, or None."""
        if not self.enabled:
            return None
        view = self.views.setdefault(deployment_id, View(self.root / "d" / deployment_id, workdir))
        layer = view.dir / instance_id
        try:
            merged = self._overlay(layer, workdir, uid)
        except OSError as exc:
            log.warning("no writable app directory for %s: %s", deployment_id, exc)
            return None
        view.commands[instance_id] = layer
        return merged

    # -- removal -------------------------------------------------------------------------------

    def drop(self, deployment_id: str) -> Path | None:
        """Unmount everything of the deployment; its directory (to delete), or None."""
        view = self.views.pop(deployment_id, None)
        if view is None or self._libc is None:
            return None
        if view.mountpoint is not None:
            self._umount_all(view.mountpoint)
        for layer in view.commands.values():
            self._umount_all(layer / "merged")
        if view.base is not None:
            self._umount_all(view.base)
        self._umount_all(view.dir)  # and any mount point `attach_beside` left
        return view.dir

    def clean(self) -> None:
        """Unmount and delete whatever an earlier run left under ``root``."""
        if self._libc is None:
            return
        self._umount_all(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- mechanics -----------------------------------------------------------------------------

    def _overlay(self, layer: Path, lower: Path, uid: int | None) -> Path:
        assert self._libc is not None
        self._dirs(layer, lower, uid)
        merged = layer / "merged"
        merged.mkdir(exist_ok=True)
        self._mount_overlay(merged, lower, layer)
        return merged

    def _mount_overlay(self, target: Path, lower: Path, layer: Path) -> None:
        """Mount ``layer`` over ``lower`` at ``target``, ``volatile`` where the kernel has it.

        Every layer is thrown away with its instance or template, so nothing in it needs to
        reach the disk: without ``volatile`` the unmount syncs the whole host filesystem under
        it, which on a busy disk blocked the runtime's event loop (and every wake) for seconds.
        An app's ``fsync`` there does nothing either; nothing it writes there outlives it."""
        assert self._libc is not None
        options = _options(lower, layer)
        if self._volatile:
            try:
                self._libc.mount("overlay", target, "overlay", 0, options + ",volatile")
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            self._libc.mount("overlay", target, "overlay", 0, options)
            self._volatile = False  # the same mount took without it: an older kernel
            log.info("overlayfs has no volatile option here: unmounting a layer syncs the disk")
            return
        self._libc.mount("overlay", target, "overlay", 0, options)

    @staticmethod
    def _dirs(layer: Path, lower: Path, uid: int | None) -> None:
        layer.mkdir(parents=True, exist_ok=True)
        layer.chmod(0o711)
        (layer / "work").mkdir(exist_ok=True)
        upper = layer / "upper"
        upper.mkdir(exist_ok=True)
        # The root of an overlay shows its upper dir's owner and mode: the app directory's.
        info = lower.stat()
        os.chown(upper, info.st_uid if uid is None else uid, info.st_gid if uid is None else uid)
        upper.chmod(info.st_mode & 0o7777)

    def _umount_all(self, under: Path) -> None:
        """Detach every mount at or below ``under``, deepest (and most recent) first."""
        assert self._libc is not None
        prefix = str(under)
        points = [p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")]
        for point in reversed(points):
            with contextlib.suppress(OSError):
                self._libc.umount(Path(point))


def _options(lower: Path, layer: Path) -> str:
    upper, work = _escape(layer / "upper"), _escape(layer / "work")
    return f"lowerdir={_escape(lower)},upperdir={upper},workdir={work}"


def _escape(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _mount_points() -> list[str]:
    """This namespace's mount points, in mount order (``/proc/self/mountinfo``)."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split()
            if len(parts) > 4:
                points.append(parts[4].encode().decode("unicode_escape"))
    return points
