"""Real releases for runtime tests: cached venvs (FastAPI, Flask, Django), tiny apps, a log sink.

Venvs are built once per machine under ``$PHEMERAL_TEST_CACHE`` (default
``/tmp/phemeral-test-cache``) with uv, from PyPI, bytecode compiled, and reused by later runs.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from phemeral.models import AppSpec, Release, RuntimeLogLine, StartCommandSource
from phemeral.settings import Settings

CACHE = Path(os.environ.get("PHEMERAL_TEST_CACHE", "/tmp/phemeral-test-cache"))
APP_UID = 27311  # an unused uid the apps run as when the tests run as root

STACKS = {
    "fastapi": ["fastapi", "uvicorn"],
    "flask": ["flask", "gunicorn"],
    "django": ["django", "gunicorn"],
    "fastapi+gunicorn": ["fastapi", "uvicorn", "gunicorn"],  # gunicorn -k UvicornWorker
    "fastapi+hypercorn": ["fastapi", "hypercorn"],
}


def _python() -> str:
    return sys.executable


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    return shutil.which("uv") or str(beside)


def build_venv(stack: str) -> Path:
    """A venv with the stack's packages, built once and cached (safe across processes)."""
    packages = STACKS[stack]
    key = hashlib.sha256(f"{sys.version_info[:2]}{packages}".encode()).hexdigest()[:10]
    CACHE.mkdir(parents=True, exist_ok=True)
    CACHE.chmod(0o755)
    venv = CACHE / f"{stack}-{key}"
    with (CACHE / f"{stack}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("VIRTUAL_ENV", None)
        subprocess.run([_uv(), "venv", "-q", "-p", _python(), str(venv)], check=True, env=env)
        subprocess.run(
            [
                _uv(),
                "pip",
                "install",
                "-q",
                "--compile-bytecode",
                "-p",
                str(venv / "bin" / "python"),
                *packages,
            ],
            check=True,
            env=env,
        )
        for path in [venv, *venv.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        (venv / ".complete").write_text("ok")
    return venv


class ListSink:
    """The runtime log sink: keeps every line (thread-safe, for assertions)."""

    def __init__(self) -> None:
        self.lines: list[RuntimeLogLine] = []
        self._lock = threading.Lock()

    def write(self, lines: list[RuntimeLogLine]) -> None:
        with self._lock:
            self.lines.extend(lines)

    def messages(self, deployment_id: str | None = None, stream: str | None = None) -> list[str]:
        with self._lock:
            return [
                line.message
                for line in self.lines
                if (deployment_id is None or line.deployment_id == deployment_id)
                and (stream is None or line.stream == stream)
            ]


class ListBuildLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stage: str, message: str) -> None:
        self.lines.append((stage, message))

    def text(self) -> str:
        return "\n".join(message for _stage, message in self.lines)


FASTAPI_APP = """
import os, time
from fastapi import FastAPI
app = FastAPI()

@app.get("/")
def root():
    print("handled /", flush=True)
    return {"hello": "fastapi", "pid": os.getpid()}

@app.get("/slow")
def slow(seconds: float = 1.0):
    time.sleep(seconds)
    return {"slept": seconds}

@app.get("/env")
def env(name: str):
    return {"value": os.environ.get(name)}

@app.get("/crash")
def crash():
    os._exit(3)

@app.get("/bomb")
def bomb():
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))

@app.get("/flood")
def flood(n: int = 10000):
    for i in range(n):
        print("flood line", i)
    return {"printed": n}

@app.get("/long")
def long(n: int = 40000):
    print("x" * n, flush=True)
    return {"printed": n}
"""

FLASK_APP = """
import os
from flask import Flask
app = Flask(__name__)

@app.get("/")
def root():
    print("handled /", flush=True)
    return {"hello": "flask", "pid": os.getpid()}
"""

DJANGO_FILES = {
    "manage.py": "import os, sys\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
    "from django.core.management import execute_from_command_line\n"
    "execute_from_command_line(sys.argv)\n",
    "mysite/__init__.py": "",
    "mysite/settings.py": "SECRET_KEY = 'test-only'\nDEBUG = False\nALLOWED_HOSTS = ['*']\n"
    "ROOT_URLCONF = 'mysite.urls'\nINSTALLED_APPS = []\nMIDDLEWARE = []\nDATABASES = {}\n"
    "USE_TZ = True\n",
    "mysite/urls.py": "import os\nfrom django.http import JsonResponse\n"
    "from django.urls import path\n"
    "def root(request):\n    print('handled /', flush=True)\n"
    "    return JsonResponse({'hello': 'django', 'pid': os.getpid()})\n"
    "urlpatterns = [path('', root)]\n",
    "mysite/wsgi.py": "import os\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
    "from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n",
}


def make_release(
    root: Path,
    deployment_id: str,
    stack: str,
    *,
    start_command: str | None = None,
    custom: bool = False,
    files: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    lock_hash: str | None = None,
) -> Release:
    """A release dir ``{root}/apps/p/releases/{id}/`` (src/ + release.json) on a cached venv."""
    venv = build_venv(stack)
    path = root / "apps" / "p" / "releases" / deployment_id
    src = path / "src"
    src.mkdir(parents=True)
    base = stack.split("+")[0]  # the app and its default command; the venv is the stack's
    if files is None:
        files = {
            "fastapi": {"main.py": FASTAPI_APP},
            "flask": {"app.py": FLASK_APP},
            "django": DJANGO_FILES,
        }[base]
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    spec = {
        "fastapi": AppSpec("fastapi", "asgi", "main:app", server="uvicorn"),
        "flask": AppSpec("flask", "wsgi", "app:app", server="gunicorn"),
        "django": AppSpec(
            "django",
            "wsgi",
            "mysite.wsgi:application",
            server="gunicorn",
            django_settings_module="mysite.settings",
        ),
    }[base]
    default = {
        "fastapi": "uvicorn main:app --host 0.0.0.0 --port $PORT",
        "flask": "gunicorn --bind 0.0.0.0:$PORT app:app",
        "django": "gunicorn --bind 0.0.0.0:$PORT mysite.wsgi:application",
    }[base]
    (path / "release.json").write_text("{}")
    for item in [root, *root.rglob("*")]:
        if item.is_dir():
            item.chmod(0o755)
        else:
            item.chmod(0o644)
    for parent in root.parents:
        if parent != Path("/"):
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    if os.geteuid() == 0:  # as the build leaves it: the source belongs to the app's uid
        for item in [src, *src.rglob("*")]:
            os.chown(item, APP_UID, APP_UID)
    return Release(
        deployment_id=deployment_id,
        project="p",
        environment="production",
        path=path,
        workdir=src,
        venv=venv,
        python_version=f"{sys.version_info[0]}.{sys.version_info[1]}",
        start_command=start_command or default,
        start_command_source=StartCommandSource.CUSTOM
        if custom
        else StartCommandSource.AUTODETECTED,
        app=None if custom else spec,
        env=env or {},
        uid=APP_UID if os.geteuid() == 0 else None,
        lock_hash=lock_hash,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # No rehearsals (`runtime.rehearsal`): their requests would race the tests that drive a
    # template's hot set by hand; test_rehearsal turns them on.
    return Settings(data_dir=data_dir, boot_timeout=20.0, idle_timeout=300.0, rehearse=False)


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def event_loop_runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def with_command(release: Release, command: str) -> Release:
    return replace(release, start_command=command)
