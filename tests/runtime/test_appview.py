"""The overlay layers of an app's writable directory, mounted for real (root): each one is
``volatile``, so unmounting it never syncs the host's filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phemeral.runtime import appview
from phemeral.runtime.appview import AppViews

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not appview.supported(), reason="overlay mounts need root and overlayfs"),
]


def mount_options(target: Path) -> str | None:
    """The filesystem options of the mount at ``target`` (``/proc/self/mountinfo``), if any."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            found = fields[-1]  # the last mount there is the one on top
    return found


def volatile(options: str | None) -> bool:
    """Mounted ``volatile`` (newer kernels show it as ``fsync=volatile``)."""
    words = (options or "").split(",")
    return "volatile" in words or "fsync=volatile" in words


def test_template_and_instance_layers_are_volatile_and_go_with_their_instance(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('hi')\n")
    views = AppViews(tmp_path / "views", enabled=True)
    try:
        base = views.base("dep-1", app, os.getuid())
        assert base is not None
        assert volatile(mount_options(base))
        mountpoint = views.attach("dep-1")
        assert mountpoint is not None
        views.start_instance("dep-1", "i-1", os.getuid())
        assert volatile(mount_options(mountpoint))
        (mountpoint / "written.txt").write_text("by the instance")
        assert not (base / "written.txt").exists()  # in the instance's own layer
        gone = views.end_instance("dep-1", "i-1")
        assert [p.name for p in gone] == ["i-1"]
        assert not (mountpoint / "written.txt").exists()  # its layer went with it
        assert (mountpoint / "main.py").read_text() == "print('hi')\n"
    finally:
        views.drop("dep-1")
