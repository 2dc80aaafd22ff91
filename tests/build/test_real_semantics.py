"""Real builds of projects shaped like the public repositories the corpus found wanting:
custom command rescue, factories, pkg_resources on Python 3.12, Poetry 1.x locks, --no-root
apps, Pipenv. Real uv, the real package index, the real sandbox."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from buildkit import FIXTURES, ListLog, make_job

from phemeral.build.pipeline import build
from phemeral.detect import detect
from phemeral.errors import BuildError, DetectionError
from phemeral.models import BuildResult
from phemeral.settings import Settings

pytestmark = pytest.mark.slow
DETECT_FIXTURES = FIXTURES.parent / "detect"


def _build(
    fixture: Path, tmp_path: Path, settings: Settings, **kw: object
) -> tuple[BuildResult, ListLog]:
    job = make_job(fixture, tmp_path, settings, **kw)  # type: ignore[arg-type]
    log = ListLog()
    result = asyncio.run(build(job, log, settings))
    return result, log


def _site(result: BuildResult) -> Path:
    return next((result.release.venv / "lib").glob("python3.*/site-packages"))


def _venv_run(result: BuildResult, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(result.release.venv / "bin" / "python"), "-c", code],
        cwd=result.release.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_custom_command_rescues_an_undetectable_project(tmp_path: Path, settings: Settings) -> None:
    fixture = FIXTURES / "custom_rescue"
    with pytest.raises(DetectionError, match="No supported framework"):
        detect(fixture)  # without a custom command there is nothing to serve
    custom = "uvicorn server:service --host 0.0.0.0 --port $PORT"
    result, log = _build(fixture, tmp_path, settings, project="rescue", custom=custom)
    assert result.release.start_command == custom
    assert result.release.app is None
    assert "no entry point autodetected" in log.text("detect")
    assert (_site(result) / "starlette").is_dir()
    assert (_site(result) / "uvicorn").is_dir()


def test_compound_custom_command_gets_its_server_installed(
    tmp_path: Path, settings: Settings
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "requirements.txt").write_text("flask\n")
    (project / "app.py").write_text("from flask import Flask\n\napp = Flask(__name__)\n")
    custom = "python -c 'print(1)' && gunicorn --bind 0.0.0.0:$PORT app:app"
    result, log = _build(project, tmp_path / "w", settings, project="compound", custom=custom)
    assert "adding gunicorn" in log.text("install")
    assert (_site(result) / "gunicorn").is_dir()


def test_factory_built_by_any_function_is_served(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(
        DETECT_FIXTURES / "factory-get-application", tmp_path, settings, project="getapp"
    )
    assert result.release.start_command.startswith("uvicorn app.main:app ")
    assert "app.main:app imported" in log.text("verify")
    result, log = _build(
        DETECT_FIXTURES / "factory-imported-create-application",
        tmp_path / "b",
        settings,
        project="importedfactory",
    )
    assert result.release.start_command == "gunicorn --bind 0.0.0.0:$PORT wsgi:app"
    assert "wsgi:app imported" in log.text("verify")


def test_factory_needing_arguments_fails_saying_what_it_needs(
    tmp_path: Path, settings: Settings
) -> None:
    with pytest.raises(BuildError) as caught:
        _build(DETECT_FIXTURES / "err-factory-needs-arguments", tmp_path, settings, project="fa")
    assert caught.value.stage == "detect"
    assert "needs the argument `config_name`" in caught.value.message
    # the fix the message suggests works: a custom command that passes the argument (one the
    # app can use: verify loads it as boot will, and config_from_object needs a real module)
    custom = "gunicorn --bind 0.0.0.0:$PORT 'app:create_app(\"app\")'"
    result, _ = _build(
        DETECT_FIXTURES / "err-factory-needs-arguments",
        tmp_path / "b",
        settings,
        project="fa2",
        custom=custom,
    )
    assert result.release.start_command == custom


def test_old_gunicorn_on_python_312_gets_setuptools_for_pkg_resources(
    tmp_path: Path, settings: Settings
) -> None:
    result, log = _build(FIXTURES / "old_gunicorn", tmp_path, settings, project="oldgunicorn")
    assert result.release.python_version.startswith("3.12.")
    install = log.text("install")
    assert "adding setuptools<81: gunicorn 20.1.0" in install, install
    assert "imports pkg_resources" in install
    # the pip venv holds pip, as `python -m venv` gives it
    assert list(_site(result).glob("pip-*.dist-info"))
    checked = _venv_run(result, "import pkg_resources, gunicorn.util, gunicorn.app.wsgiapp")
    assert checked.returncode == 0, checked.stderr
    config = subprocess.run(
        [str(result.release.venv / "bin" / "gunicorn"), "--check-config", "app:app"],
        cwd=result.release.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_poetry_1x_lock_installs_by_hash(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "poetry1_lock", tmp_path, settings, project="poetry1")
    install = log.text("install")
    assert "poetry.lock: 9 packages in the main group, installed by hash" in install
    site = _site(result)
    assert (site / "flask").is_dir() and (site / "gunicorn").is_dir()
    assert not (site / "pytest").exists()


def test_poetry_app_without_package_folder_installs_like_no_root(
    tmp_path: Path, settings: Settings
) -> None:
    result, log = _build(FIXTURES / "poetry_no_root", tmp_path, settings, project="noroot")
    install = log.text("install")
    assert "warning: the project is named 'my-service' but has no my_service/ package" in install
    assert "poetry install --no-root" in install
    assert "installing the project itself" not in install
    assert (_site(result) / "flask").is_dir()
    assert result.release.start_command == "gunicorn --bind 0.0.0.0:$PORT app:app"


def test_pipenv_lock_installs_its_default_set_by_hash(tmp_path: Path, settings: Settings) -> None:
    result, log = _build(FIXTURES / "pipenv_lock", tmp_path, settings, project="pipenvapp")
    assert result.detection["package_manager"] == "pipenv"
    assert result.release.python_version.startswith("3.11.")  # Pipfile [requires]
    install = log.text("install")
    assert "Pipfile.lock: 9 packages in [default], installed by hash" in install
    site = _site(result)
    assert (site / "flask").is_dir() and (site / "gunicorn").is_dir()
    assert not (site / "pytest").exists()  # [develop] left out
    assert "app:app imported" in log.text("verify")


def test_poetry_root_that_cannot_be_built_installs_like_no_root(
    tmp_path: Path, settings: Settings
) -> None:
    # the legacy `poetry.masonry.api` backend needs Poetry itself: Poetry users never notice
    result, log = _build(FIXTURES / "poetry_legacy_backend", tmp_path, settings, project="legacy")
    install = log.text("install")
    assert "warning: the project itself could not be built" in install
    assert "poetry install --no-root" in install
    assert (_site(result) / "flask").is_dir()
    assert "wsgi:app imported" in log.text("verify")
