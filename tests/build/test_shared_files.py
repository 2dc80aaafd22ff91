"""Identical shared libraries of two releases' venvs become one root-owned, read-only inode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phemeral.build import shared_files

pytestmark = pytest.mark.root


def _venv(root: Path, uid: int, files: dict[str, bytes]) -> Path:
    venv = root / ".venv"
    for name, data in files.items():
        path = venv / "lib" / "python3.12" / "site-packages" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755)
        os.chown(path, uid, uid)
    return venv


def test_identical_libraries_of_two_venvs_share_one_read_only_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("hard links to root-owned files need root")
    big = os.urandom(shared_files.MIN_BYTES + 1)
    other = os.urandom(shared_files.MIN_BYTES + 1)
    small = b"x" * 100
    files_a = {"core/_core.cpython-312-x86_64-linux-gnu.so": big, "tiny.so": small, "a.py": big}
    files_b = {"core/_core.cpython-312-x86_64-linux-gnu.so": big, "lib/libz.so.1": other}
    a = _venv(tmp_path / "a", 20001, files_a)
    b = _venv(tmp_path / "b", 20002, files_b)
    store = tmp_path / "store"

    assert shared_files.share(a, store).files == 1
    done = shared_files.share(b, store)
    assert (done.files, done.bytes) == (2, len(big) + len(other))

    site_a, site_b = a / "lib/python3.12/site-packages", b / "lib/python3.12/site-packages"
    core_a = (site_a / "core/_core.cpython-312-x86_64-linux-gnu.so").stat()
    core_b = (site_b / "core/_core.cpython-312-x86_64-linux-gnu.so").stat()
    assert (core_a.st_ino, core_a.st_dev) == (core_b.st_ino, core_b.st_dev)  # one inode
    assert (core_a.st_uid, core_a.st_mode & 0o7777) == (0, 0o555)  # nobody can change it
    assert (site_a / "core/_core.cpython-312-x86_64-linux-gnu.so").read_bytes() == big
    assert (site_b / "lib/libz.so.1").read_bytes() == other
    # Small libraries and anything that is not a shared library stay the app's own.
    assert (site_a / "tiny.so").stat().st_uid == 20001
    assert (site_a / "a.py").stat().st_uid == 20001
    assert oct(store.stat().st_mode & 0o777) == oct(0o700)
    assert not [p for p in site_a.rglob("*") if p.name.endswith(".link")]

    # A copy no venv links any more goes; the ones in use stay.
    (site_b / "lib/libz.so.1").unlink()
    assert shared_files.remove_unused(store) == 1
    assert len(list(store.iterdir())) == 1
    # Sharing a venv again links the same copy.
    assert shared_files.share(a, store).files == 1
    assert (site_a / "core/_core.cpython-312-x86_64-linux-gnu.so").read_bytes() == big
