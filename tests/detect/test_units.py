"""Focused checks of the parsers and pure decisions behind detection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from phemeral.cli.detect import detect_command
from phemeral.detect import detect, resolve_start_command
from phemeral.detect.command import default_command
from phemeral.detect.pyversions import exact_minor, parse_pep440, parse_poetry, satisfies
from phemeral.detect.requirements import normalise, parse_line, parse_requirements
from phemeral.detect.tree import SourceTree, clean_relpath
from phemeral.errors import DetectionError
from phemeral.models import AppSpec, StartCommandSource

FIXTURES = Path(__file__).parent.parent / "fixtures" / "detect"


@pytest.mark.parametrize(
    ("text", "allowed", "refused"),
    [
        ("^3.11", ["3.11", "3.13"], ["3.10", "4.0"]),
        ("^0.2", ["0.2"], ["0.3"]),
        ("~3.11", ["3.11"], ["3.12", "3.10"]),
        ("~3", ["3.8", "3.13"], ["4.0"]),
        (">=3.9,<3.12", ["3.9", "3.11"], ["3.12"]),
        (">=3.9 <3.12", ["3.9"], ["3.12"]),
        ("3.11.*", ["3.11"], ["3.12"]),
        ("3.11", ["3.11"], ["3.12"]),
        ("*", ["3.8", "3.14"], []),
        ("~3.10 || ^3.12", ["3.10", "3.12", "3.13"], ["3.11"]),
    ],
)
def test_poetry_constraints(text: str, allowed: list[str], refused: list[str]) -> None:
    constraint = parse_poetry(text)
    assert constraint is not None
    for minor in allowed:
        assert satisfies(constraint, minor), (text, minor)
    for minor in refused:
        assert not satisfies(constraint, minor), (text, minor)


def test_pep440_tilde_equal_is_not_a_pin() -> None:
    constraint = parse_pep440("~=3.11")
    assert constraint is not None
    assert satisfies(constraint, "3.13")
    assert not satisfies(constraint, "3.10")
    assert parse_pep440("not a range") is None
    assert parse_poetry("^^3") is None


def test_exact_versions() -> None:
    assert exact_minor("3.12") == "3.12"
    assert exact_minor("3.12.4") == "3.12"
    assert exact_minor("3.13t") is None
    assert exact_minor(">=3.12") is None


def test_requirement_lines() -> None:
    assert normalise("Flask_SQLAlchemy") == "flask-sqlalchemy"
    assert parse_line("FastAPI[standard]>=0.115 --hash=sha256:00") == (
        "fastapi",
        frozenset({"standard"}),
    )
    assert parse_line("pywin32 ; sys_platform == 'win32'") is None
    assert parse_line("uvloop ; sys_platform != 'win32'") == ("uvloop", frozenset())
    assert parse_line("mypkg @ https://example.com/mypkg-1.0.tar.gz") == ("mypkg", frozenset())
    assert parse_line("-e git+https://example.com/x.git#egg=My_Lib") == ("my-lib", frozenset())
    assert parse_line("--index-url https://example.com/simple") is None
    assert parse_line("./local/path") is None
    # a Python-version marker holds for some Python the project may run on: kept
    assert parse_line('Django==6.0.5; python_version >= "3.12"') == ("django", frozenset())
    assert parse_line('oldlib; python_version < "3.0"') is None


def test_requirements_includes_cycles_and_escapes(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "-r base.txt\n-r ../outside.txt\n-r missing.txt\nflask \\\n  >=3 # comment\n"
    )
    (tmp_path / "base.txt").write_text("-r requirements.txt\nDjango\n")
    parsed = parse_requirements(SourceTree(tmp_path), "requirements.txt")
    assert parsed is not None
    assert [(d.name, d.source) for d in parsed.dependencies] == [
        ("django", "base.txt:2"),
        ("flask", "requirements.txt:4"),
    ]
    assert any("outside the project" in w for w in parsed.warnings)
    assert any("missing.txt, which is missing" in w for w in parsed.warnings)


def test_clean_relpath_refuses_escapes() -> None:
    assert clean_relpath("a/./b") == "a/b"
    assert clean_relpath("../a") is None
    assert clean_relpath("a/../../b") is None


@pytest.mark.parametrize(
    ("spec", "app_dir", "command"),
    [
        (
            AppSpec("fastapi", "asgi", "main:app"),
            "",
            "uvicorn main:app --host 0.0.0.0 --port $PORT",
        ),
        (
            AppSpec("fastapi", "asgi", "main:make_app", factory=True),
            "src",
            "uvicorn main:make_app --host 0.0.0.0 --port $PORT --factory --app-dir src",
        ),
        (
            AppSpec("flask", "wsgi", "app:create_app", factory=True, server="gunicorn"),
            "",
            "gunicorn --bind 0.0.0.0:$PORT 'app:create_app()'",
        ),
        (
            AppSpec("flask", "wsgi", "web.app:app", server="gunicorn"),
            "src",
            "gunicorn --bind 0.0.0.0:$PORT --pythonpath src web.app:app",
        ),
    ],
)
def test_default_commands(spec: AppSpec, app_dir: str, command: str) -> None:
    assert default_command(spec, app_dir) == command


def test_custom_start_command_wins() -> None:
    detection = detect(FIXTURES / "fastapi-pip-basic")
    assert resolve_start_command("  python serve.py  ", detection) == (
        "python serve.py",
        StartCommandSource.CUSTOM,
    )
    for empty in (None, "", "   "):
        assert resolve_start_command(empty, detection) == (
            detection.start_command,
            StartCommandSource.AUTODETECTED,
        )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from phemeral.cli import main; main()", "detect", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json_and_summary() -> None:
    runner = CliRunner()
    result = runner.invoke(detect_command, [str(FIXTURES / "c28-src-layout"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["entrypoint"] == "myapi.main:app"
    assert data["root_dir"] == "."
    summary = runner.invoke(detect_command, [str(FIXTURES / "c28-src-layout")])
    assert summary.exit_code == 0
    assert "entry point      myapi.main:app" in summary.output
    overridden = runner.invoke(
        detect_command, [str(FIXTURES / "root-dir-setting"), "--root-dir", "other", "--json"]
    )
    assert json.loads(overridden.output)["framework"] == "fastapi"


def test_cli_undetectable_exits_2_with_one_message() -> None:
    result = _cli(str(FIXTURES / "err-two-lockfiles"), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: Found two lockfiles")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_platform_default_falls_back_to_the_newest_installed() -> None:
    basic = FIXTURES / "fastapi-pip-basic"
    assert detect(basic, available_versions=["3.11", "3.13"]).python_version == "3.13"
    assert detect(basic, available_versions=["3.11", "3.12"]).python_version == "3.12"
    assert detect(basic, default_version="3.11").python_version == "3.11"
    ranged = FIXTURES / "c15-requires-python-excludes-default"
    assert detect(ranged, available_versions=["3.10", "3.12"]).python_version == "3.10"


def test_an_unsupported_pin_lists_only_the_supported_pythons_installed() -> None:
    # A machine may carry older interpreters (3.6, 3.7) that builds never use: the message
    # offers only what a project can change its pin to.
    pinned = FIXTURES / "err-version-not-available"  # .python-version: 3.7
    with pytest.raises(DetectionError) as caught:
        detect(pinned, available_versions=["3.6", "3.7", "3.11", "3.12"])
    message = caught.value.message
    assert "asks for Python 3.7, which is not supported" in message
    assert "this platform has 3.11, 3.12." in message
    assert "3.6" not in message
