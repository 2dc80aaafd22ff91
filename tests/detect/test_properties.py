"""Properties of detection on arbitrary trees: it never crashes, never reads outside the root,
reads a bounded amount per file, and gives the same answer every time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phemeral.detect import detect
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError

NAMES = [
    "requirements.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile",
    ".python-version",
    "runtime.txt",
    ".tool-versions",
    "mise.toml",
    "manage.py",
    "main.py",
    "app.py",
    "wsgi.py",
    "app/__init__.py",
    "app/main.py",
    "mysite/settings.py",
    "mysite/wsgi.py",
    "mysite/settings/__init__.py",
    "src/pkg/main.py",
    "backend/requirements.txt",
    "backend/main.py",
    "requirements/base.txt",
    "setup.py",
    "setup.cfg",
    "sub/manage.py",
]
SNIPPETS = [
    "fastapi\nuvicorn\n",
    "flask\n-r requirements/base.txt\n-r requirements.txt\n",
    "-r ../../../etc/passwd\n-c /etc/hosts\n",
    "django\n",
    '[project]\nname = "x"\nrequires-python = ">=3.99"\ndependencies = ["fastapi"]\n',
    '[project]\nname = "x"\ndependencies = [1, {a = 2}, "!!bad"]\n',
    '[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\npython = "^^3"\n'
    'flask = {version = "*"}\n',
    "[project\n= broken",
    'version = 1\nrequires-python = "nonsense"\n[[package]]\nname = "a"\n'
    'source = { virtual = "." }\ndependencies = [{ name = "a" }]\n',
    "3.12\n",
    "version = 1\npackage = 3\n[metadata]\npython-versions = 7\n",
    '[project]\nname = 1\nrequires-python = 3\nscripts = "x"\n[tool.uv]\nworkspace = 1\n',
    "[packages]\nflask = 1\n[requires]\npython_version = 3.11\n",
    '[tools]\npython = ["3.12", 1]\n',
    "\ufeffpython-3.11.2\r\n",
    "system\n",
    "from fastapi import FastAPI\napp = FastAPI()\n",
    "from flask import Flask\ndef create_app():\n    return Flask(__name__)\n",
    "from .main import app\nfrom . import *\nfrom ...... import x\n",
    'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n',
    'from .settings import *\nWSGI_APPLICATION = "mysite.wsgi.application"\n',
    "x = (" * 200 + "\n",
    "def f(:\n",
    "\x00\x01\x02",
    "from setuptools import setup\nsetup(install_requires=['flask', 1, '!!', f'{x}'])\n",
    "[options]\ninstall_requires =\n    fastapi\n    %(x)s\n[broken\n",
    '[tool.fastapi]\nentrypoint = "a.b:"\n',
]
contents = st.one_of(
    st.sampled_from(SNIPPETS),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.text(max_size=200),
    st.lists(st.sampled_from(SNIPPETS), max_size=3).map("".join),
)
trees = st.dictionaries(st.sampled_from(NAMES), contents, max_size=10)
links = st.lists(
    st.tuples(
        st.sampled_from([*NAMES, "linked", "app", "mysite"]),
        st.sampled_from(["file", "dir", "loop"]),
    ),
    max_size=3,
)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # "app" as a file and "app/main.py" cannot both exist


@contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Every path os.open is asked for while the block runs."""
    seen: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        seen.append(os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    with mock.patch("os.open", spy):
        yield seen


def outcome(root: Path) -> object:
    try:
        return detect(root, available_versions=("3.11", "3.12", "3.13")).to_json()
    except DetectionError as exc:
        return ("error", exc.message)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=trees, symlinks=links)
def test_never_crashes_never_reads_outside_and_is_deterministic(
    files: dict[str, str], symlinks: list[tuple[str, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        outside.mkdir()
        (outside / "requirements.txt").write_text("django\n")
        (outside / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
        root = Path(tmp) / "repo"
        root.mkdir()
        write_tree(root, files)
        for name, kind in symlinks:
            link = root / name
            if link.exists() or link.is_symlink():
                continue
            if not link.parent.exists():
                link.parent.mkdir(parents=True)
            if not link.parent.is_dir():
                continue
            targets = {"file": outside / "requirements.txt", "dir": outside, "loop": link.parent}
            link.symlink_to(targets[kind])
        with recording_opens() as opened:
            first = outcome(root)
        real_root = os.path.realpath(root)
        for path in opened:
            real = os.path.realpath(path)
            assert real == real_root or real.startswith(real_root + os.sep), path
        assert outcome(root) == first


def test_symlinked_manifest_outside_the_root_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "requirements.txt").write_text("flask\ngunicorn\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "requirements.txt").symlink_to(outside / "requirements.txt")
    (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    try:
        detect(root)
    except DetectionError as exc:
        assert "No Python project found" in exc.message
    else:
        raise AssertionError("a manifest outside the root was read")


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "deps.txt").write_text("flask\ngunicorn\n")
    (tmp_path / "requirements.txt").symlink_to("deps.txt")
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    assert detect(tmp_path).entrypoint == "app:app"


def test_huge_files_are_not_read_past_the_bound(tmp_path: Path) -> None:
    # Sparse 8 GiB files: reading them whole would take minutes and all memory.
    for name in ("requirements.txt", "main.py"):
        with (tmp_path / name).open("wb") as handle:
            handle.truncate(8 * 1024**3)
    tree = SourceTree(tmp_path, max_file_bytes=4096)
    assert tree.read_bytes("main.py") is None
    assert tree.too_large == ["main.py"]
    try:
        detect(tmp_path)
    except DetectionError as exc:
        assert "No Python project found" in exc.message


def test_reads_are_bounded_per_file(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"x" * 5000)
    (tmp_path / "small.txt").write_bytes(b"x" * 100)
    tree = SourceTree(tmp_path, max_file_bytes=1000)
    assert tree.read_bytes("big.txt") is None
    assert tree.read_bytes("small.txt") == b"x" * 100
    assert tree.read_bytes("../" + tmp_path.name + "/small.txt") is None  # no climbing out


def test_ten_thousand_files(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("fastapi\nuvicorn\n")
    for i in range(100):
        folder = tmp_path / f"pkg{i:03d}"
        folder.mkdir()
        for j in range(100):
            (folder / f"mod{j:03d}.py").write_text("x = 1\n")
    (tmp_path / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    first = detect(tmp_path).to_json()
    assert first["entrypoint"] == "main:app"
    assert detect(tmp_path).to_json() == first


def test_user_code_is_never_imported_or_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    effect = f"open({str(marker)!r}, 'w').close()\n"
    (tmp_path / "requirements.txt").write_text("django\nfastapi\nuvicorn\n")
    (tmp_path / "main.py").write_text(effect + "from fastapi import FastAPI\napp = FastAPI()\n")
    (tmp_path / "manage.py").write_text(
        effect + 'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_.settings")\n'
    )
    (tmp_path / "site_").mkdir()
    (tmp_path / "site_" / "__init__.py").write_text(effect)
    (tmp_path / "site_" / "settings.py").write_text(
        effect + 'WSGI_APPLICATION = "site_.wsgi.app"\n'
    )
    (tmp_path / "site_" / "wsgi.py").write_text(effect + "app = object()\n")
    result = detect(tmp_path)
    assert (result.framework, result.entrypoint) == ("django", "site_.wsgi:app")
    assert not marker.exists()
