"""Packing ships the right files; unpacking refuses hostile archives and writes nothing."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from phemeral.build.archive import ArchiveLimits, files_to_pack, pack, unpack
from phemeral.errors import SourceError


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


HOSTILE = {
    "traversal": ([_file("ok.py"), _file("../../escape.py")], "climbs out"),
    "absolute path": ([_file("/etc/cron.d/evil")], "absolute path"),
    "device file": ([_file("ok.py"), _special("dev/null", tarfile.CHRTYPE)], "device file"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "FIFO"),
    "hard link": ([_file("a"), _link("b", "/etc/shadow", tarfile.LNKTYPE)], "hard link"),
    "absolute symlink": ([_file("app.py"), _link("leak", "/etc/shadow")], "outside the project"),
    "relative escaping symlink": ([_link("sub/leak", "../../etc/passwd")], "outside the project"),
    "write through symlink": ([_link("d", "sub"), _file("d/x.py")], "through the symlink"),
    "link chain escaping": (
        [_link("a/self", ".."), _link("a/b/up", "../self/.."), _file("a/b/f")],
        "outside",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_refused_and_nothing_leaks(tmp_path: Path, case: str) -> None:
    members, message = HOSTILE[case]
    archive = _tar(tmp_path / "a.tar.gz", members)
    dest = tmp_path / "out"
    with pytest.raises(SourceError, match=message):
        unpack(archive, dest)
    # nothing of the host was copied; at most an empty destination remains
    leaked = (
        [p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()] if dest.exists() else []
    )
    assert leaked == []
    assert not (tmp_path.parent / "escape.py").exists()


def test_too_many_files(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", [_file(f"f{i}") for i in range(11)])
    with pytest.raises(SourceError, match="more than 10 entries"):
        unpack(archive, tmp_path / "out", ArchiveLimits(max_files=10))
    assert not (tmp_path / "out").exists()


def test_too_big(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", [_file("big", b"\0" * 300_000)])
    with pytest.raises(SourceError, match="more than"):
        unpack(archive, tmp_path / "out", ArchiveLimits(max_bytes=100_000))


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "a.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(SourceError, match="cannot be read"):
        unpack(bad, tmp_path / "out")


def test_inside_symlinks_survive_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "app.py").write_text("app = 1\n")
    (src / "main.py").symlink_to("pkg/app.py")
    (src / "leak").symlink_to("/etc/shadow")  # packed as a link, refused on unpack
    (src / ".venv" / "bin").mkdir(parents=True)
    (src / ".venv" / "bin" / "python").write_text("")
    (src / "pkg" / "__pycache__").mkdir()
    (src / "pkg" / "__pycache__" / "app.pyc").write_bytes(b"")
    assert files_to_pack(src) == ["leak", "main.py", "pkg/app.py"]
    os.unlink(src / "leak")
    stats = pack(src, tmp_path / "a.tar.gz")
    assert stats.files == 2
    out = tmp_path / "out"
    unpacked = unpack(tmp_path / "a.tar.gz", out)
    assert unpacked.files == 2
    assert (out / "main.py").is_symlink()
    assert (out / "main.py").read_text() == "app = 1\n"


def test_packed_leak_link_never_copies_host_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("")
    (src / "leak").symlink_to("/etc/shadow")
    archive = tmp_path / "a.tar.gz"
    pack(src, archive)
    with tarfile.open(archive) as tar:
        leak = tar.getmember("leak")
        assert leak.issym() and leak.size == 0  # the host file's content never entered
    with pytest.raises(SourceError, match="outside the project"):
        unpack(archive, tmp_path / "out")


def test_git_checkout_ships_tracked_and_untracked_not_ignored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (repo / ".gitignore").write_text("secret.env\nbuild/\n")
    (repo / "app.py").write_text("v1")
    (repo / "gone.py").write_text("")
    run("add", ".")
    run("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    (repo / "app.py").write_text("v2 uncommitted")
    (repo / "new.py").write_text("")
    (repo / "secret.env").write_text("TOKEN=x")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("")
    (repo / "gone.py").unlink()
    assert files_to_pack(repo) == [".gitignore", "app.py", "new.py"]
