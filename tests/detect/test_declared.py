"""What a repository declares: Procfile, phemeral.toml, other platforms' files, precedence,
port binding, leading release steps, and the server of the default command."""

from __future__ import annotations

from pathlib import Path

import pytest

from phemeral.detect import detect, resolve_start_command, why_start_command
from phemeral.detect.binding import bind_to_port, split_release_step, split_steps
from phemeral.detect.procfile import parse_procfile
from phemeral.errors import DetectionError
from phemeral.models import ProjectOverrides, StartCommandSource

FLASK = {
    "requirements.txt": "flask\ngunicorn\n",
    "app.py": "from flask import Flask\n\napp = Flask(__name__)\n",
}
VERSIONS = ("3.11", "3.12", "3.13")


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def run(tmp_path: Path, files: dict[str, str], **kw: object) -> dict[str, object]:
    return detect(tree(tmp_path, {**FLASK, **files}), available_versions=VERSIONS, **kw).to_json()  # type: ignore[arg-type]


# -- Procfile ---------------------------------------------------------------------------------


def test_procfile_entries_comments_and_blank_lines() -> None:
    text = (
        "# processes\n\nweb: gunicorn app:app\n"
        "release:python manage.py migrate\nworker: celery -A p worker\n"
    )
    entries = parse_procfile(text)
    assert [(e.name, e.command, e.line) for e in entries] == [
        ("web", "gunicorn app:app", 3),
        ("release", "python manage.py migrate", 4),
        ("worker", "celery -A p worker", 5),
    ]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("web gunicorn app:app", "cannot read 'web gunicorn app:app'"),
        ("web:", "without a command"),
        ("web: gunicorn 'app:app", "cannot be parsed"),
        ("we b: gunicorn app:app", "cannot read"),
    ],
)
def test_unparseable_procfile_line_is_quoted(line: str, fragment: str) -> None:
    with pytest.raises(DetectionError) as info:
        parse_procfile(f"worker: celery\n{line}\n")
    assert fragment in info.value.message
    assert "Procfile:2" in info.value.message


def test_procfile_name_twice_is_an_error() -> None:
    with pytest.raises(DetectionError, match="again"):
        parse_procfile("web: a\nweb: b\n")


def test_procfile_web_wins_over_autodetection(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "Procfile": "web: gunicorn --config gunicorn.conf.py app:app\n"
            "release: flask --app app init-db\nworker: python worker.py\n"
        },
    )
    assert out["start_command"] == "gunicorn --bind 0.0.0.0:$PORT --config gunicorn.conf.py app:app"
    assert out["start_command_source"] == "procfile"
    assert out["autodetected_start_command"] == "gunicorn --bind 0.0.0.0:$PORT app:app"
    assert out["release_command"] == "flask --app app init-db"
    assert out["release_command_source"] == "procfile"
    assert out["processes"] == {"worker": "python worker.py"}
    assert out["process_sources"] == {"worker": "Procfile:3"}
    sources = out["sources"]
    assert isinstance(sources, dict)
    assert sources["start_command"] == "Procfile:1"


def test_precedence_custom_then_declared_then_autodetected(tmp_path: Path) -> None:
    root = tree(tmp_path, {**FLASK, "Procfile": "web: gunicorn -b 0.0.0.0:$PORT app:app\n"})
    detection = detect(root, available_versions=VERSIONS)
    assert resolve_start_command("  my-server --port $PORT ", detection) == (
        "my-server --port $PORT",
        StartCommandSource.CUSTOM,
    )
    assert "wins over Procfile:1" in why_start_command("my-server", detection)
    for cleared in (None, "", "   "):
        assert resolve_start_command(cleared, detection) == (
            "gunicorn -b 0.0.0.0:$PORT app:app",
            StartCommandSource.PROCFILE,
        )
    (root / "Procfile").unlink()
    plain = detect(root, available_versions=VERSIONS)
    assert resolve_start_command(None, plain) == (
        "gunicorn --bind 0.0.0.0:$PORT app:app",
        StartCommandSource.AUTODETECTED,
    )
    assert "autodetected" in why_start_command(None, plain)


def test_bad_procfile_fails_detection(tmp_path: Path) -> None:
    with pytest.raises(DetectionError, match="Procfile:1"):
        run(tmp_path, {"Procfile": "this is not a procfile\n"})


# -- $PORT ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "bound"),
    [
        ("gunicorn app:app", "gunicorn --bind 0.0.0.0:$PORT app:app"),
        ("gunicorn -b 0.0.0.0:$PORT app:app", None),
        ("gunicorn --bind=0.0.0.0:${PORT:-8000} app:app", None),
        ("gunicorn --bind 0.0.0.0:5000 app:app", "gunicorn --bind 0.0.0.0:$PORT app:app"),
        ("gunicorn --bind=:8000 app:app", "gunicorn --bind=0.0.0.0:$PORT app:app"),
        ("uvicorn main:app --host 0.0.0.0 --port $PORT", None),
        ("uvicorn main:app --port=${PORT:-8000} --host 0.0.0.0", None),
        ("uvicorn main:app", "uvicorn --host 0.0.0.0 --port $PORT main:app"),
        (
            "uvicorn main:app --host 0.0.0.0 --port 8000",
            "uvicorn main:app --host 0.0.0.0 --port $PORT",
        ),
        (
            "python -m uvicorn main:app --port 80 --host 0.0.0.0",
            "python -m uvicorn main:app --port $PORT --host 0.0.0.0",
        ),
        ("hypercorn main:app", "hypercorn --bind 0.0.0.0:$PORT main:app"),
        ("hypercorn -b 0.0.0.0:${PORT:-8000} main:app", None),
        (
            "daphne proj.asgi:application",
            "daphne --bind 0.0.0.0 --port $PORT proj.asgi:application",
        ),
        (
            "granian --interface asgi main:app",
            "granian --host 0.0.0.0 --port $PORT --interface asgi main:app",
        ),
        (
            "python manage.py migrate && gunicorn p.wsgi",
            "python manage.py migrate && gunicorn --bind 0.0.0.0:$PORT p.wsgi",
        ),
        ("celery -A proj worker", None),
        ("./start.sh", None),
        ("uvicorn main:app --uds /tmp/s", None),
    ],
)
def test_declared_servers_listen_on_port(command: str, bound: str | None) -> None:
    result, note = bind_to_port(command)
    assert result == (bound or command)
    assert (note is not None) == (bound is not None)


def test_port_variants_through_detection(tmp_path: Path) -> None:
    out = run(tmp_path, {"Procfile": "web: gunicorn --bind 127.0.0.1:5000 --workers 3 app:app\n"})
    assert out["start_command"] == "gunicorn --bind 0.0.0.0:$PORT --workers 3 app:app"


# -- leading steps ------------------------------------------------------------------------------


def test_split_steps_respects_quotes() -> None:
    assert split_steps("a && b 'x && y' && c") == ["a", "b 'x && y'", "c"]


@pytest.mark.parametrize(
    ("command", "release", "start"),
    [
        (
            "python manage.py migrate && gunicorn p.wsgi",
            "python manage.py migrate",
            "gunicorn p.wsgi",
        ),
        (
            "python manage.py migrate && python manage.py createcachetable && uvicorn m:app",
            "python manage.py migrate && python manage.py createcachetable",
            "uvicorn m:app",
        ),
        (
            "python manage.py migrate && python manage.py collectstatic --noinput && gunicorn m",
            "python manage.py migrate",
            "python manage.py collectstatic --noinput && gunicorn m",
        ),
        (
            "python manage.py collectstatic --noinput && gunicorn m",
            None,
            "python manage.py collectstatic --noinput && gunicorn m",
        ),
        ("cd backend && gunicorn p.wsgi", None, "cd backend && gunicorn p.wsgi"),
        ("export X=1 && gunicorn p.wsgi", None, "export X=1 && gunicorn p.wsgi"),
        ("python manage.py migrate && ./run.sh", None, "python manage.py migrate && ./run.sh"),
        ("gunicorn p.wsgi", None, "gunicorn p.wsgi"),
    ],
)
def test_split_release_step(command: str, release: str | None, start: str) -> None:
    assert split_release_step(command) == (release, start)


# -- other platforms ----------------------------------------------------------------------------


def test_railway_start_command_with_leading_migrate(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "railway.json": '{"deploy": {"startCommand": '
            '"python manage.py migrate && gunicorn app:app --bind 0.0.0.0:$PORT"}}'
        },
    )
    assert out["start_command"] == "gunicorn app:app --bind 0.0.0.0:$PORT"
    assert out["start_command_source"] == "railway.json"
    assert out["release_command"] == "python manage.py migrate"
    assert out["release_command_source"] == "railway.json"


def test_railway_pre_deploy_is_the_release_and_nothing_is_split(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "railway.toml": '[deploy]\nstartCommand = "flask db upgrade && gunicorn app:app"\n'
            'preDeployCommand = ["python seed.py"]\n'
        },
    )
    assert out["start_command"] == "flask db upgrade && gunicorn --bind 0.0.0.0:$PORT app:app"
    assert out["release_command"] == "python seed.py"


def test_render_yaml_web_service(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "render.yaml": "services:\n  - type: worker\n    name: w\n    startCommand: celery\n"
            "  - type: web\n    name: api\n    runtime: python\n"
            "    startCommand: gunicorn app:app\n    preDeployCommand: flask db upgrade\n"
        },
    )
    assert out["start_command"] == "gunicorn --bind 0.0.0.0:$PORT app:app"
    assert out["start_command_source"] == "render.yaml"
    assert out["release_command"] == "flask db upgrade"


def test_heroku_yml_and_hints(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "heroku.yml": "build:\n  docker:\n    web: Dockerfile\nrelease:\n  command:\n"
            "    - ./manage.py migrate\nrun:\n  web: gunicorn app:app\n",
            "Dockerfile": 'FROM python:3.12\nCMD ["gunicorn", "app:app"]\n',
            "app.json": '{"scripts": {"postdeploy": "python seed.py"}}',
        },
    )
    assert out["start_command_source"] == "heroku.yml"
    assert out["release_command"] == "./manage.py migrate"
    hints = out["declared_hints"]
    assert isinstance(hints, list)
    assert any("app.json: scripts.postdeploy" in h for h in hints)
    assert any("Dockerfile:2: CMD gunicorn app:app" in h for h in hints)


def test_procfile_wins_over_other_platforms(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "Procfile": "web: gunicorn app:app\n",
            "railway.json": '{"deploy": {"startCommand": "uvicorn app:app"}}',
        },
    )
    assert out["start_command_source"] == "procfile"
    unused = out["declarations_not_used"]
    assert isinstance(unused, list) and unused and "railway.json" in unused[0]


def test_unreadable_platform_file_is_only_a_warning(tmp_path: Path) -> None:
    out = run(tmp_path, {"render.yaml": "services: [\n"})
    warnings = out["warnings"]
    assert isinstance(warnings, list) and any(
        "render.yaml could not be read" in w for w in warnings
    )
    assert out["start_command_source"] == "autodetected"


# -- phemeral.toml --------------------------------------------------------------------------------


def test_phemeral_toml_sets_everything_with_sources(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        {
            "phemeral.toml": 'start = "gunicorn -w 2 app:app"\nrelease = "flask init-db"\n'
            'python_version = "3.11"\nhealth_check_path = "/healthz"\nidle_timeout = 60\n'
            'release_timeout = 30\n\n[processes]\nclock = "python clock.py"\n',
            "Procfile": "web: gunicorn app:app\nworker: python w.py\n",
        },
    )
    assert out["start_command"] == "gunicorn --bind 0.0.0.0:$PORT -w 2 app:app"
    assert out["start_command_source"] == "phemeral.toml"
    assert out["release_command"] == "flask init-db"
    assert out["python_version"] == "3.11"
    assert out["python_version_source"] == "phemeral.toml:3"
    assert out["health_check_path"] == "/healthz"
    assert out["idle_timeout"] == 60.0
    assert out["release_timeout"] == 30.0
    assert out["processes"] == {"clock": "python clock.py", "worker": "python w.py"}
    sources = out["sources"]
    assert isinstance(sources, dict)
    assert sources["health_check_path"] == "phemeral.toml:4"
    assert sources["process.clock"] == "phemeral.toml:9"


def test_saved_settings_win_over_phemeral_toml(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "phemeral.toml": 'root_dir = "b"\npython_version = "3.11"\n',
            "a/requirements.txt": "flask\ngunicorn\n",
            "a/app.py": FLASK["app.py"],
            "b/requirements.txt": "flask\ngunicorn\n",
            "b/app.py": FLASK["app.py"],
        },
    )
    from_file = detect(root, available_versions=VERSIONS).to_json()
    assert from_file["root_dir"] == "b"
    assert from_file["sources"]["root_dir"] == "phemeral.toml:1"  # type: ignore[index]
    saved = detect(
        root,
        overrides=ProjectOverrides(root_dir="a", python_version="3.13"),
        available_versions=VERSIONS,
    ).to_json()
    assert saved["root_dir"] == "a"
    assert saved["python_version"] == "3.13"
    assert saved["sources"]["root_dir"] == "project setting"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("start = 3\n", "start must be a non-empty string"),
        ('health_check_path = "healthz"\n', "must start with '/'"),
        ("idle_timeout = -1\n", "positive number"),
        ("[processes]\nweb = 'x'\n", "use the top-level"),
        ("start = \n", "not valid TOML"),
    ],
)
def test_phemeral_toml_errors_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(DetectionError, match=fragment):
        run(tmp_path, {"phemeral.toml": text})


def test_unknown_phemeral_toml_key_is_a_warning(tmp_path: Path) -> None:
    out = run(tmp_path, {"phemeral.toml": 'colour = "blue"\n'})
    assert any("unknown key 'colour'" in w for w in out["warnings"])  # type: ignore[attr-defined]


# -- servers --------------------------------------------------------------------------------------

FASTAPI_MAIN = "from fastapi import FastAPI\n\napp = FastAPI()\n"


@pytest.mark.parametrize(
    ("requirements", "command", "missing"),
    [
        ("fastapi\nhypercorn\n", "hypercorn --bind 0.0.0.0:$PORT main:app", None),
        (
            "fastapi\ngranian\n",
            "granian --interface asgi --host 0.0.0.0 --port $PORT main:app",
            None,
        ),
        ("fastapi\ndaphne\n", "daphne -b 0.0.0.0 -p $PORT main:app", None),
        ("fastapi\nuvicorn\nhypercorn\n", "uvicorn main:app --host 0.0.0.0 --port $PORT", None),
        ("fastapi\n", "uvicorn main:app --host 0.0.0.0 --port $PORT", "uvicorn"),
    ],
)
def test_default_command_uses_the_projects_server(
    tmp_path: Path, requirements: str, command: str, missing: str | None
) -> None:
    root = tree(tmp_path, {"requirements.txt": requirements, "main.py": FASTAPI_MAIN})
    out = detect(root, available_versions=VERSIONS).to_json()
    assert out["start_command"] == command
    assert out["missing_server"] == missing


def test_flask_with_granian_only(tmp_path: Path) -> None:
    out = run(tmp_path, {"requirements.txt": "flask\ngranian\n"})
    assert out["start_command"] == "granian --interface wsgi --host 0.0.0.0 --port $PORT app:app"
    assert out["missing_server"] is None


def test_declared_server_missing_from_dependencies_is_added(tmp_path: Path) -> None:
    out = run(tmp_path, {"Procfile": "web: hypercorn app:app\n"})
    assert out["missing_server"] == "hypercorn"


def test_a_root_dir_upload_keeps_the_repository_roots_declarations() -> None:
    from phemeral.build.scope import needed_files

    files = ["phemeral.toml", "Procfile", "README.md", "web/app.js", "api/app.py", "api/req.txt"]
    assert needed_files(files, "api", {}.get) == [
        "Procfile",
        "api/app.py",
        "api/req.txt",
        "phemeral.toml",
    ]
