"""Each way a build fails ends with a BuildError naming the stage and the reason, and leaves
nothing half-built behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from buildkit import APP_UID, FIXTURES, ListLog, make_job

from phemeral.build.pipeline import build
from phemeral.errors import BuildError, BuildTimeout
from phemeral.models import ProjectOverrides
from phemeral.settings import Settings


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "project"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _fail(project: Path, tmp_path: Path, settings: Settings) -> tuple[BuildError, ListLog, Path]:
    job = make_job(project, tmp_path / "work", settings, project="broken")
    log = ListLog()
    with pytest.raises(BuildError) as caught:
        asyncio.run(build(job, log, settings))
    assert not job.release_dir.exists()  # nothing half-built remains
    assert "build failed:" in log.text()
    return caught.value, log, job.release_dir


def test_no_python_project(tmp_path: Path, settings: Settings) -> None:
    project = _project(tmp_path, {"README.md": "# not python\n", "index.html": "<p>hi</p>"})
    error, _, _ = _fail(project, tmp_path, settings)
    assert error.stage == "detect"


def test_missing_interpreter_lists_available(tmp_path: Path, settings: Settings) -> None:
    project = _project(
        tmp_path,
        {
            ".python-version": "3.14\n",
            "requirements.txt": "flask\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        },
    )
    error, _, _ = _fail(project, tmp_path, settings)
    assert error.stage in ("detect", "python")
    assert "3.14" in error.message
    assert "3.11" in error.message and "3.12" in error.message  # the versions this server has


@pytest.mark.slow
def test_unresolvable_dependency(tmp_path: Path, settings: Settings) -> None:
    project = _project(
        tmp_path,
        {
            "requirements.txt": "fastapi\nphemeral-no-such-package-xyz==1.0\n",
            "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    error, _, _ = _fail(project, tmp_path, settings)
    assert error.stage == "install"
    assert "cannot be resolved" in error.message
    assert "phemeral-no-such-package-xyz" in error.message


@pytest.mark.slow
def test_stale_uv_lock(tmp_path: Path, settings: Settings) -> None:
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "uv_fastapi", project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"uvicorn>=0.29"', '"uvicorn>=0.29", "httpx"')
    )
    error, _, _ = _fail(project, tmp_path, settings)
    assert error.stage == "install"
    assert "run `uv lock`" in error.message


@pytest.mark.slow
def test_import_error_traceback_in_log(tmp_path: Path, settings: Settings) -> None:
    project = _project(
        tmp_path,
        {
            "requirements.txt": "fastapi\nuvicorn\n",
            "main.py": (
                "from fastapi import FastAPI\nimport helpers_that_do_not_exist\napp = FastAPI()\n"
            ),
        },
    )
    error, log, _ = _fail(project, tmp_path, settings)
    assert error.stage == "verify"
    assert "helpers_that_do_not_exist" in error.message
    assert "Traceback (most recent call last)" in log.text("verify")


@pytest.mark.slow
def test_import_failure_names_the_exception_not_its_messages_last_line(
    tmp_path: Path, settings: Settings
) -> None:
    # pydantic's ValidationError (among others) ends its message with "For further information
    # visit ...": the reason's line is what was raised, not the traceback output's last line.
    project = _project(
        tmp_path,
        {
            "requirements.txt": "flask\n",
            "app.py": (
                "from flask import Flask\n"
                "app = Flask(__name__)\n"
                "raise ValueError('1 validation error for Settings\\n"
                "environment\\n  Input should be a valid string\\n"
                "    For further information visit https://example.invalid/e')\n"
            ),
        },
    )
    error, log, _ = _fail(project, tmp_path, settings)
    assert error.stage == "verify"
    assert "failed: ValueError: 1 validation error for Settings (traceback above)" in error.message
    assert "For further information visit" in log.text("verify")  # the whole message is logged


@pytest.mark.slow
def test_timeout_kills_the_build(tmp_path: Path, settings: Settings) -> None:
    # an in-tree build backend that never finishes: the install stage hangs until the limit
    project = _project(
        tmp_path,
        {
            "pyproject.toml": (
                '[project]\nname = "slow"\nversion = "0"\ndependencies = ["fastapi"]\n'
                '[build-system]\nrequires = []\nbuild-backend = "slow_backend"\n'
                'backend-path = ["."]\n'
            ),
            "slow_backend.py": "import time\ntime.sleep(600)\n",
            "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    quick = replace(settings, build_timeout=8)
    started = time.monotonic()
    error, log, _ = _fail(project, tmp_path, quick)
    assert isinstance(error, BuildTimeout)
    assert error.stage == "install"
    assert time.monotonic() - started < 40
    assert "limit" in log.text()
    out = subprocess_run(["pgrep", "-f", "slow_backend"])
    assert out == "", f"build processes survived: {out}"


def subprocess_run(argv: list[str]) -> str:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def test_hostile_upload_fails_at_source(tmp_path: Path, settings: Settings) -> None:
    project = _project(tmp_path, {"main.py": "app = None\n"})
    (project / "leak").symlink_to("/etc/shadow")
    error, log, _ = _fail(project, tmp_path, settings)
    assert error.stage == "source"
    assert "outside the project" in error.message
    assert "root:" not in log.text()


@pytest.mark.slow
def test_build_code_cannot_see_platform_data(tmp_path: Path, settings: Settings) -> None:
    secret = settings.data_dir / "phemeral.db"
    secret.write_text("PLATFORM-SECRET")
    secret.chmod(0o600)
    other = settings.data_dir / "apps" / "other-tenant" / "env.json"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text("OTHER-TENANT")
    targets = [str(secret), str(other), "/root/.pyenv/version", "/etc/shadow", "/etc/passwd"]
    probe = (
        "import os\n"
        f"targets = {targets!r}\n"
        "seen = [t for t in targets if os.path.exists(t)]\n"
        "print('SEEN' if seen else 'HIDDEN', seen, 'uid', os.getuid(), flush=True)\n"
        "raise SystemExit(1)\n"
    )
    project = _project(
        tmp_path,
        {
            "pyproject.toml": (
                '[project]\nname = "nosy"\nversion = "0"\ndependencies = ["fastapi"]\n'
                '[build-system]\nrequires = []\nbuild-backend = "nosy_backend"\n'
                'backend-path = ["."]\n'
            ),
            "nosy_backend.py": probe,
            "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    error, log, _ = _fail(project, tmp_path, settings)
    assert error.stage == "install"
    text = log.text("install")
    assert "HIDDEN [] uid" in text, text
    if os.geteuid() == 0:
        assert f"uid {APP_UID}" in text  # build code ran as the app uid, not root
    assert "PLATFORM-SECRET" not in text


def test_without_bwrap_unreachable_paths_fail_clearly(tmp_path: Path, settings: Settings) -> None:
    if os.geteuid() != 0:
        pytest.skip("the uid drop only happens as root")
    project = _project(
        tmp_path,
        {
            "requirements.txt": "flask\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        },
    )
    no_bwrap = replace(settings, sandbox="none")
    error, _, _ = _fail(project, tmp_path, no_bwrap)
    # this machine keeps /tmp/pytest-of-root and /root at 0700: the app uid could not get there
    assert error.stage == "python"
    assert "chmod o+x" in error.message and "install bubblewrap" in error.message


@pytest.mark.parametrize("root_dir", ["../..", "/etc", "a/../../..", "services/../../x"])
def test_root_dir_setting_cannot_leave_the_source(
    tmp_path: Path, settings: Settings, root_dir: str
) -> None:
    project = _project(
        tmp_path,
        {
            "requirements.txt": "flask\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        },
    )
    job = make_job(
        project, tmp_path / "work", settings, overrides=ProjectOverrides(root_dir=root_dir)
    )
    with pytest.raises(BuildError) as caught:
        asyncio.run(build(job, ListLog(), settings))
    assert caught.value.stage == "detect"
    assert not job.release_dir.exists()


@pytest.mark.slow
def test_cancelled_build_leaves_no_processes_cgroup_or_release(
    tmp_path: Path, settings: Settings
) -> None:
    project = _project(
        tmp_path,
        {
            "pyproject.toml": (
                '[project]\nname = "stuck"\nversion = "0"\ndependencies = ["fastapi"]\n'
                '[build-system]\nrequires = []\nbuild-backend = "stuck_backend"\n'
                'backend-path = ["."]\n'
            ),
            "stuck_backend.py": "import time\ntime.sleep(600)\n",
            "main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    job = make_job(project, tmp_path / "work", settings, project="stuck")
    log = ListLog()

    async def scenario() -> None:
        task = asyncio.create_task(build(job, log, settings))
        deadline = time.monotonic() + 60
        while "installing dependencies" not in log.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the backend is running now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert not job.release_dir.exists()
    assert not list(Path("/sys/fs/cgroup/memory/phemeral").glob(f"build-{job.deployment_id}"))
    assert subprocess_run(["pgrep", "-f", "stuck_backend"]) == ""


@pytest.mark.slow
def test_verify_imports_as_the_server_does_so_a_boot_failure_fails_the_build(
    tmp_path: Path, settings: Settings
) -> None:
    # wsgi.py uses a model before get_wsgi_application() has set Django up: gunicorn fails
    # on it at boot ("Apps aren't loaded yet"); a verify that set Django up first hid it.
    project = _project(
        tmp_path,
        {
            "requirements.txt": "django\ngunicorn\n",
            "manage.py": "import os, sys\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
            "from django.core.management import execute_from_command_line\n"
            "execute_from_command_line(sys.argv)\n",
            "mysite/__init__.py": "",
            "mysite/settings.py": "SECRET_KEY = 'x'\nALLOWED_HOSTS = ['*']\n"
            "INSTALLED_APPS = ['polls']\nROOT_URLCONF = 'mysite.urls'\n"
            "WSGI_APPLICATION = 'mysite.wsgi.application'\nDATABASES = {}\n",
            "mysite/urls.py": "urlpatterns = []\n",
            "mysite/wsgi.py": "import os\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
            "from polls.models import Question\n"
            "from django.core.wsgi import get_wsgi_application\n"
            "application = get_wsgi_application()\n",
            "polls/__init__.py": "",
            "polls/models.py": "from django.db import models\n"
            "class Question(models.Model):\n    text = models.CharField(max_length=20)\n",
        },
    )
    error, log, _ = _fail(project, tmp_path, settings)
    assert error.stage == "verify"
    assert "Apps aren't loaded yet" in log.text("verify")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the disk quota is a loop mount (root)")
def test_a_5_gb_write_stops_at_the_disk_quota(tmp_path: Path, settings: Settings) -> None:
    # importing the app (the verify stage) writes up to 5 GB next to it
    project = _project(
        tmp_path,
        {
            "requirements.txt": "fastapi\nuvicorn\n",
            "main.py": (
                "import os\nfrom fastapi import FastAPI\n\napp = FastAPI()\n"
                "with open(os.path.join(os.path.dirname(__file__), 'fill.bin'), 'wb') as out:\n"
                "    block = os.urandom(1 << 20)\n"
                "    for _ in range(5 * 1024):\n"
                "        out.write(block)\n"
            ),
        },
    )
    small = replace(settings, build_disk_mb=300)
    error, log, _ = _fail(project, tmp_path, small)
    assert error.stage == "verify"
    assert "ran out of disk space" in error.message and "300 MB" in error.message
    assert "No space left on device" in log.text("verify")
    # nothing of the build's file system is left: no image, no mount
    assert not any((settings.data_dir / "workspaces").glob("*.img"))
    assert str(settings.data_dir / "workspaces") not in Path("/proc/self/mountinfo").read_text()
