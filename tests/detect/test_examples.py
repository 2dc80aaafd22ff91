"""The bundled examples are detected as documented, their locks are consistent, and they serve."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from platformkit import free_port

from phemeral.build.interpreters import choose, discover_pythons
from phemeral.detect import detect

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UV = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "uv")
EXPECTED = {
    "fastapi": ("main:app", "uvicorn main:app --host 0.0.0.0 --port $PORT"),
    "flask": ("app:app", "gunicorn --bind 0.0.0.0:$PORT app:app"),
    "django": ("hello.wsgi:application", "gunicorn --bind 0.0.0.0:$PORT hello.wsgi:application"),
}
NAMES = sorted(f"{fw}-{pm}" for fw in EXPECTED for pm in ("uv", "pip", "poetry"))


def test_every_framework_and_manager_has_an_example() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_is_detected(name: str) -> None:
    framework, manager = name.split("-")
    result = detect(EXAMPLES / name, available_versions=("3.11", "3.12", "3.13"))
    entrypoint, command = EXPECTED[framework]
    assert result.to_json() | {"sources": None} == {
        "root_dir": ".",
        "python_version": "3.12",
        "python_version_source": ".python-version",
        "package_manager": manager,
        "framework": framework,
        "entrypoint": entrypoint,
        "start_command": command,
        "warnings": [],
        "sources": None,
        "missing_server": None,
        "interface": "asgi" if framework == "fastapi" else "wsgi",
        "server": "uvicorn" if framework == "fastapi" else "gunicorn",
        "app_dir": "",
        "django_settings_module": "hello.settings" if framework == "django" else None,
        "workspace_root": None,
        # added by the declared-commands contract (fields are only ever added)
        "start_command_source": "autodetected",
        "autodetected_start_command": command,
        "release_command": None,
        "release_command_source": None,
        "processes": {},
        "process_sources": {},
        "declared_hints": [],
        "declarations_not_used": [],
    }


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("-poetry")])
def test_poetry_lock_is_fresh(name: str) -> None:
    """The lock's content-hash is Poetry's hash of the [tool.poetry] dependency keys."""
    poetry = tomllib.loads((EXAMPLES / name / "pyproject.toml").read_text())["tool"]["poetry"]
    lock = tomllib.loads((EXAMPLES / name / "poetry.lock").read_text())
    relevant = {k: poetry.get(k) for k in ("dependencies", "source", "extras", "dev-dependencies")}
    expected = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    assert lock["metadata"]["content-hash"] == expected
    assert lock["metadata"]["lock-version"] == "2.0"
    for package in lock["package"]:
        assert package["files"], package["name"]
        assert all(f["hash"].startswith("sha256:") for f in package["files"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if not n.endswith("-poetry")])
def test_example_serves_its_root_route(name: str, tmp_path: Path) -> None:
    """Install the example as its package manager would, run the detected command, GET /."""
    interpreter = choose(discover_pythons(), "3.12")
    if interpreter is None:
        pytest.skip("no Python 3.12 on this machine")
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES / name, source)
    venv = tmp_path / ".venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_PROJECT_ENVIRONMENT": str(venv)}
    if name.endswith("-uv"):
        install = [UV, "sync", "--locked", "--no-dev", "--python", str(interpreter.path)]
    else:
        subprocess.run([UV, "venv", "-q", "--python", str(interpreter.path), str(venv)], check=True)
        install = [UV, "pip", "install", "-q", "--python", str(venv), "-r", "requirements.txt"]
    subprocess.run(install, cwd=source, env=env, check=True, capture_output=True, timeout=240)
    port = free_port()
    command = detect(source).start_command.replace("$PORT", str(port))
    argv = shlex.split(command)
    argv[0] = str(venv / "bin" / argv[0])
    server = subprocess.Popen(argv, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    assert reply.status == 200
                    assert "Hello from Phemeral" in reply.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=10)
