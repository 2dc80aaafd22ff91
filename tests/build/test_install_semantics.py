"""The pure decisions behind install semantics: lock translation, --no-root, pkg_resources,
the servers a command runs, and what a root-dir upload carries."""

from __future__ import annotations

import pytest
from buildkit import FIXTURES

from phemeral.build import pipenv, poetry
from phemeral.build.install import older_python_hint, setuptools_decision, unpinned_import_hint
from phemeral.build.scope import needed_files
from phemeral.detect.servers import servers_in_command
from phemeral.errors import BuildError


def test_poetry_1x_lock_takes_hashes_from_metadata_files() -> None:
    d = FIXTURES / "poetry1_lock"
    chosen = poetry.plan(
        (d / "poetry.lock").read_text(), (d / "pyproject.toml").read_text(), "3.12.1"
    )
    names = [p.name for p in chosen.packages]
    assert names == [
        "blinker", "click", "flask", "gunicorn", "itsdangerous", "jinja2", "markupsafe",
        "packaging", "werkzeug",
    ]  # fmt: skip
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in chosen.packages)


def test_poetry_1x_lock_without_any_hash_is_refused() -> None:
    lock = '[[package]]\nname = "flask"\nversion = "3.0.0"\ncategory = "main"\noptional = false\n'
    lock += '\n[metadata]\nlock-version = "1.1"\n\n[metadata.files]\nflask = []\n'
    pyproject = '[tool.poetry.dependencies]\npython = "^3.11"\nflask = "*"\n'
    with pytest.raises(BuildError, match="no file hashes for flask"):
        poetry.plan(lock, pyproject, "3.12.1")


def test_missing_root_package() -> None:
    pyproject = '[tool.poetry]\nname = "My-Service"\n\n[build-system]\nrequires = ["poetry-core"]\n'
    assert poetry.missing_root_package(pyproject, lambda rel: False) is not None
    assert poetry.missing_root_package(pyproject, lambda rel: rel == "my_service") is None
    assert poetry.missing_root_package(pyproject, lambda rel: rel == "src/my_service.py") is None
    declared = pyproject.replace('"My-Service"', '"x"\npackages = [{include = "app"}]')
    assert poetry.missing_root_package(declared, lambda rel: False) is None


def test_pipfile_lock_plan_pins_hashes_and_markers() -> None:
    lock = (
        '{"default": {"flask": {"version": "==3.0.0", "hashes": ["sha256:aa", "sha256:bb"]},'
        ' "uvloop": {"version": "==0.19.0", "hashes": ["sha256:cc"],'
        ' "markers": "sys_platform != \'win32\'"},'
        ' "me": {"path": ".", "editable": true}}, "develop": {}}'
    )
    chosen = pipenv.plan_lock(lock)
    assert chosen.hashed and chosen.install_root
    text = chosen.requirements_text()
    assert "flask==3.0.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb" in text
    assert "uvloop==0.19.0 ; sys_platform != 'win32' \\\n    --hash=sha256:cc" in text
    with pytest.raises(BuildError, match="no hashes for flask"):
        pipenv.plan_lock('{"default": {"flask": {"version": "==3.0.0"}}}')


def test_pipfile_without_lock_plan() -> None:
    text = (
        '[packages]\nflask = "*"\ngunicorn = ">=21"\n'
        'uvicorn = {version = "0.30", extras = ["standard"]}\n'
    )
    chosen = pipenv.plan_pipfile(text)
    assert chosen.lines == ("flask", "gunicorn>=21", "uvicorn[standard]==0.30")
    assert not chosen.hashed


def test_setuptools_decision() -> None:
    needers = ["gunicorn 20.1.0 (gunicorn/util.py)"]
    line = setuptools_decision(needers, "none")
    assert line is not None and "gunicorn 20.1.0" in line and "is not installed" in line
    assert "81.0.0 no longer ships it" in (setuptools_decision(needers, "81.0.0") or "")
    assert setuptools_decision(needers, "80.9.0") is None
    assert setuptools_decision([], "none") is None


@pytest.mark.parametrize(
    ("command", "servers"),
    [
        ("python manage.py migrate && gunicorn mysite.wsgi", ["gunicorn"]),
        ("flask db upgrade; flask translate compile; exec gunicorn microblog:app", ["gunicorn"]),
        ("bash -c 'echo hi' || true", []),
        ("python -m uvicorn main:app --port $PORT", ["uvicorn"]),
        ("env A=1 .venv/bin/hypercorn app:app", ["hypercorn"]),
        ("daphne -p $PORT proj.asgi:application & uvicorn x:y", ["daphne", "uvicorn"]),
        ("waitress-serve --port=$PORT app:app", ["waitress"]),
    ],
)
def test_servers_in_command(command: str, servers: list[str]) -> None:
    assert servers_in_command(command) == servers


def test_root_dir_upload_keeps_only_what_the_build_needs() -> None:
    files = [
        ".python-version",
        "README.md",
        "frontend/node_modules/x.js",
        "frontend/package.json",
        "docs/big.pdf",
        "shared/requirements-base.txt",
        "libs/common/pyproject.toml",
        "libs/common/common/__init__.py",
        "services/Dockerfile",
        "services/api/requirements.txt",
        "services/api/main.py",
        "services/web/main.py",
    ]
    texts = {
        "services/api/requirements.txt": (
            "-r ../../shared/requirements-base.txt\n-e ../../libs/common\nfastapi\n"
        ),
        "shared/requirements-base.txt": "httpx\n",
    }
    kept = needed_files(files, "services/api", texts.get)
    assert kept == [
        ".python-version",
        "libs/common/common/__init__.py",
        "libs/common/pyproject.toml",
        "services/Dockerfile",
        "services/api/main.py",
        "services/api/requirements.txt",
        "shared/requirements-base.txt",
    ]
    assert needed_files(files, "", texts.get) == sorted(files)


def test_root_dir_in_a_uv_workspace_ships_the_workspace() -> None:
    files = ["pyproject.toml", "uv.lock", "apps/api/pyproject.toml", "apps/api/main.py",
             "libs/core/pyproject.toml", "web/app.js"]  # fmt: skip
    texts = {"pyproject.toml": '[tool.uv.workspace]\nmembers = ["apps/*", "libs/*"]\n'}
    assert needed_files(files, "apps/api", texts.get) == sorted(files)


def test_older_python_hint_names_installed_versions_only_when_nothing_pins() -> None:
    failed = "installing dependencies failed:\n  × Failed to build `psycopg2==2.8.6`\n"
    hint = older_python_hint(failed, "3.12", "platform default", ["3.6", "3.10", "3.11", "3.12"])
    assert hint is not None
    assert "psycopg2 does not build for Python 3.12" in hint
    assert "Older Pythons installed here: 3.11, 3.10. Pin one in .python-version" in hint
    assert older_python_hint(failed, "3.12", ".python-version", ["3.11"]) is None
    assert older_python_hint("No solution found", "3.12", "platform default", ["3.11"]) is None


def test_unpinned_import_hint_for_code_newer_pythons_removed() -> None:
    failed = (
        "importing the entry point conduit.wsgi:application failed: ModuleNotFoundError: "
        "No module named 'django.utils.six.moves'"
    )
    hint = unpinned_import_hint(failed, "3.12", "platform default", ["3.9", "3.11", "3.12"])
    assert hint is not None and "Older Pythons installed here: 3.11, 3.9" in hint
    assert unpinned_import_hint(failed, "3.12", "runtime.txt", ["3.11"]) is None
    other = "importing the entry point main:app failed: KeyError: 'DBUSER'"
    assert unpinned_import_hint(other, "3.12", "platform default", ["3.11"]) is None
