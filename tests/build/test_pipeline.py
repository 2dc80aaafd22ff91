"""End-to-end builds of real projects with real uv and the real package index."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from buildkit import APP_UID, FIXTURES, ListLog, make_job

from phemeral.build.pipeline import build
from phemeral.build.release import read_release
from phemeral.errors import BuildError
from phemeral.models import BuildResult
from phemeral.settings import Settings

pytestmark = pytest.mark.slow


def _build(
    fixture: Path, tmp_path: Path, settings: Settings, **kw: object
) -> tuple[BuildResult, ListLog]:
    job = make_job(fixture, tmp_path, settings, **kw)  # type: ignore[arg-type]
    log = ListLog()
    result = asyncio.run(build(job, log, settings))
    return result, log


def _assert_release(result: BuildResult) -> None:
    rel = result.release
    assert (rel.path / "release.json").is_file()
    assert read_release(rel.path) == rel
    assert (rel.venv / "bin" / "python").exists()
    if os.geteuid() == 0:
        # the build really ran as the app uid: the venv it created belongs to it
        assert (rel.venv / "pyvenv.cfg").stat().st_uid == APP_UID
        assert rel.path.stat().st_uid == 0
        # host modes: no other host user lists or reads the release; the app's uid owns its parts
        assert rel.path.stat().st_mode & 0o777 == 0o711  # root's: release.json cannot be swapped
        for folder in (rel.path.parent, rel.path.parent.parent):  # releases/, apps/<project>/
            assert folder.stat().st_mode & 0o777 == 0o711, folder
        for part in (rel.path / "src", rel.venv):
            assert (part.stat().st_uid, part.stat().st_mode & 0o777) == (APP_UID, 0o700), part
        cache = rel.path.parents[3] / "cache" / "projects" / str(APP_UID)
        assert (cache / "uv").stat().st_mode & 0o777 == 0o700
        assert (cache / "uv").stat().st_uid == APP_UID


def test_uv_project(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "uv_fastapi", tmp_path, settings, project="uvapp")
    _assert_release(result)
    assert log.stages() == ["source", "detect", "python", "install", "verify", "release"]
    assert result.release.python_version.startswith("3.12.")
    assert result.release.start_command.startswith("uvicorn main:app")
    assert "uv sync --locked" in log.text("install")
    # production only: the dev group is not installed
    site = next((result.release.venv / "lib").glob("python3.*/site-packages"))
    assert (site / "fastapi").is_dir()
    if os.geteuid() == 0:
        # its shared libraries are links to one read-only copy that other releases share
        core = next((site / "pydantic_core").glob("_pydantic_core*.so")).stat()
        assert (core.st_uid, core.st_mode & 0o7777, core.st_nlink) == (0, 0o555, 2)
        assert "linked to one copy shared by identical releases" in log.text("release")
    assert not (site / "pytest").exists()
    assert "main:app imported" in log.text("verify")


def test_poetry_lock_main_group_by_hash(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "poetry_flask", tmp_path, settings, project="poetryapp")
    _assert_release(result)
    install = log.text("install")
    assert "poetry.lock: 9 packages in the main group, installed by hash" in install
    assert "installing the project itself" in install
    site = next((result.release.venv / "lib").glob("python3.*/site-packages"))
    assert (site / "flask").is_dir() and (site / "gunicorn").is_dir()
    assert not (site / "pytest").exists()  # dev group left out
    assert result.release.start_command == "gunicorn --bind 0.0.0.0:$PORT wsgi:app"


def test_pip_flask_factory_adds_missing_server(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "pip_flask_factory", tmp_path, settings, project="factory")
    _assert_release(result)
    assert result.release.python_version.startswith("3.11.")
    assert "adding gunicorn" in log.text("install")
    assert "calling the factory" in log.text("verify")
    assert result.release.app is not None and result.release.app.factory


def test_src_layout(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "src_layout", tmp_path, settings, project="srclayout")
    _assert_release(result)
    assert "srcapp.main:app imported" in log.text("verify")


def test_monorepo_subfolder(tmp_path: Path, settings: Settings) -> None:
    result, _ = _build(FIXTURES / "monorepo", tmp_path, settings, project="mono")
    _assert_release(result)
    assert result.release.workdir == result.release.path / "src" / "services" / "api"
    assert result.detection["root_dir"] == "services/api"


def test_django_split_settings_collects_static(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "django_split", tmp_path, settings, project="django")
    _assert_release(result)
    assert "collectstatic" in log.text("verify")
    static = result.release.workdir / "staticfiles" / "admin"
    assert static.is_dir()
    if os.geteuid() == 0:
        assert static.stat().st_uid == APP_UID


def test_custom_start_command_is_kept(tmp_path: Path, settings: Settings) -> None:
    custom = "uvicorn main:app --host 0.0.0.0 --port $PORT --workers 2"
    result, log = _build(
        FIXTURES / "uv_fastapi", tmp_path, settings, project="custom", custom=custom
    )
    assert result.release.start_command == custom
    assert result.release.start_command_source.value == "custom"
    # Verified as boot will load it: the command's own server and app, by the template.
    assert "the app loads under uvicorn" in log.text("verify")
    assert json.loads((result.release.path / "release.json").read_text())["start_command"] == custom


def test_a_custom_server_command_whose_app_cannot_load_fails_verify(
    tmp_path: Path, settings: Settings
) -> None:
    custom = "gunicorn --workers 2 -k uvicorn.workers.UvicornWorker main:missing -b :$PORT"
    with pytest.raises(BuildError) as caught:
        _build(FIXTURES / "uv_fastapi", tmp_path, settings, project="custom2", custom=custom)
    assert caught.value.stage == "verify"
    assert "main:missing" in caught.value.message or "missing" in caught.value.message


def test_rebuild_with_unchanged_lock_hits_cache(tmp_path: Path, settings: Settings) -> None:
    _build(FIXTURES / "uv_fastapi", tmp_path / "a", settings, project="cachey")
    result, log = _build(FIXTURES / "uv_fastapi", tmp_path / "b", settings, project="cachey")
    assert "cache hit" in log.text("install")
    assert "compiled files reused from the cache" in log.text("install")
    site = next((result.release.venv / "lib").glob("python3.*/site-packages"))
    assert list((site / "fastapi" / "__pycache__").glob("routing.*.pyc"))


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "example",
    sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir()) if EXAMPLES_DIR.is_dir() else [],
)
def test_example_builds(example: str, tmp_path: Path, settings: Settings) -> None:
    result, log = _build(EXAMPLES_DIR / example, tmp_path, settings, project=example)
    _assert_release(result)
    framework, manager = example.split("-")
    assert result.detection["framework"] == framework
    assert result.detection["package_manager"] == manager
    assert "imported" in log.text("verify")


def test_verify_sees_project_variables_without_logging_them(
    tmp_path: Path, settings: Settings
) -> None:
    project = tmp_path / "envapp"
    project.mkdir()
    (project / "requirements.txt").write_text("fastapi\nuvicorn\n")
    secret = 's3 cr\'et "$HOME" `x`'
    (project / "main.py").write_text(
        "import os\nfrom fastapi import FastAPI\n"
        f"assert os.environ['API_SECRET'] == {secret!r}, os.environ.get('API_SECRET')\n"
        "app = FastAPI()\n"
    )
    result, log = _build(
        project, tmp_path / "w", settings, project="envapp", env={"API_SECRET": secret}
    )
    _assert_release(result)
    assert result.release.env == {"API_SECRET": secret}
    assert secret not in log.text()
    assert not (result.release.path / ".home").exists()  # the env file went with the build home
