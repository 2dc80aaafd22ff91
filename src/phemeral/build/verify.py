"""Import the app's entry point in the built venv, inside the sandbox, before anything serves it.

A broken import fails the build with the traceback in the log instead of failing at the first
request. It sees what boot will see: the runtime's environment (``$PORT``, ``LANG``, the
project's variables, ``DJANGO_SETTINGS_MODULE`` as the runtime sets it), the network the app
will have, its working directory, and the target imported the way its server imports it (no
``django.setup()`` first: the WSGI/ASGI module does that itself, or fails as it would at boot).
Factories are called. Afterwards ``collectstatic --noinput`` runs when staticfiles and
``STATIC_ROOT`` are set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from phemeral import sandbox
from phemeral.build.runner import BuildContext, run
from phemeral.errors import BuildError
from phemeral.models import AppSpec
from phemeral.runtime.command import parse_server_command
from phemeral.runtime.launch import ZYGOTE_SOURCE

STAGE = "verify"
VERIFY_PORT = "8000"  # what $PORT reads while imported (the runtime's templates load with it)
MARK = "@@phemeral-verify@@"
CHECK_MARK = "@@phemeral-check@@"  # what `zygote.py --check` prints when the app loaded

# Runs inside the sandbox with the release's interpreter; argv: target factory app_dir.
_PROBE = r"""
import importlib, json, os, sys, traceback
target, factory, app_dir = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
sys.path.insert(0, os.path.abspath(app_dir))
report = {"staticfiles": False}
try:
    # As the server does it: import the module, then the attribute (then call a factory).
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in (attr or "app").removesuffix("()").split("."):
        obj = getattr(obj, part)
    if factory:
        obj = obj()
    if not callable(obj):
        raise TypeError(f"{target} is {type(obj).__name__}, not a callable web application")
    report["type"] = type(obj).__module__ + "." + type(obj).__qualname__
    if os.environ.get("DJANGO_SETTINGS_MODULE") and "django" in sys.modules:
        from django.conf import settings
        report["staticfiles"] = (
            "django.contrib.staticfiles" in settings.INSTALLED_APPS
            and bool(getattr(settings, "STATIC_ROOT", None))
        )
except BaseException:
    traceback.print_exc()
    sys.exit(3)
print(MARK + json.dumps(report))
""".replace("MARK", repr(MARK))


def exception_line(output: list[str]) -> str:
    """The line naming what was raised, from a failed import's output (pure).

    That is the first line after the last traceback's frames (``ValueError: ...``), not the
    output's last line: an exception's message may run over several lines (pydantic's
    ``ValidationError`` ends with "For further information visit ..."). Without a traceback,
    the last non-empty line.
    """
    lines = [line.rstrip() for line in output if line.strip()]
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (")), default=-1)
    if start >= 0:
        header = next((line for line in lines[start + 1 :] if not line[:1].isspace()), None)
        if header is not None:
            return header.strip()
    return lines[-1].strip() if lines else "no output"


async def _check_server_command(
    command: str | None,
    workdir: Path,
    venv: Path,
    user_env: Mapping[str, str],
    home: Path,
    ctx: BuildContext,
) -> None:
    env = app_env(None, user_env, venv)
    server = parse_server_command(command, int(VERIFY_PORT), env) if command else None
    if server is None:
        ctx.log.write(STAGE, "the start command runs as given: no entry point to import-check")
        return
    ctx.log.write(STAGE, f"loading the app as `{' '.join(server.argv)}` will at boot")
    message = {
        "spec": {"server": server.server},
        "argv": list(server.argv),
        "workdir": str(workdir / server.chdir) if server.chdir else str(workdir),
        "env": dict(server.env),
    }
    env_file = sandbox.write_env_file(home / "app.env", env, ctx.uid)
    loader = ["/bin/sh", "-c", '. "$0" && exec "$@"', str(env_file)]
    python = str(venv / "bin" / "python")
    result = await run(
        ctx,
        STAGE,
        [*loader, python, str(ZYGOTE_SOURCE), "--check", json.dumps(message)],
        chdir=workdir,
        env={"PATH": env["PATH"], "HOME": env["HOME"]},
        share_net=True,
        ro=[ZYGOTE_SOURCE],
        quiet=True,
    )
    report = next((line for line in result.output if line.startswith(CHECK_MARK)), None)
    for line in result.output:
        if not line.startswith(CHECK_MARK):
            ctx.emit(STAGE, line)
    if not result.ok or report is None:
        raise BuildError(
            f"loading the app for `{command}` failed: {exception_line(result.output)}"
            " (traceback above)",
            stage=STAGE,
        )
    ctx.log.write(STAGE, f"the app loads under {server.server}")


def app_env(spec: AppSpec | None, user_env: Mapping[str, str], venv: Path) -> dict[str, str]:
    """The environment the app sees at verify time, as at run time (pure)."""
    # The runtime's own order (`runtime.launch.Launcher.env`): its defaults, then the
    # project's variables, then ``$PORT``.
    env = {
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",  # noqa: S108 (the sandbox's private tmpfs)
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "VIRTUAL_ENV": str(venv),
    }
    env.update(user_env)
    env["PORT"] = VERIFY_PORT
    if spec is not None and spec.django_settings_module:
        env.setdefault("DJANGO_SETTINGS_MODULE", spec.django_settings_module)
    return env


async def verify(
    spec: AppSpec | None,
    *,
    workdir: Path,
    app_dir: str,
    venv: Path,
    user_env: Mapping[str, str],
    home: Path,
    ctx: BuildContext,
    command: str | None = None,
) -> None:
    """Import-check the entry point (and collect Django static files); BuildError on failure.

    A custom or declared ``command`` that the runtime's template runs (a gunicorn, uvicorn or
    hypercorn command line) is loaded exactly as the template will load it at boot.
    """
    if spec is None:
        await _check_server_command(command, workdir, venv, user_env, home, ctx)
        return
    env = app_env(spec, user_env, venv)
    python = str(venv / "bin" / "python")
    # The project's variables (secrets among them) reach the process through a 0600 file the
    # app uid sources, never through argv, where every host user could read them.
    env_file = sandbox.write_env_file(home / "app.env", env, ctx.uid)
    loader = ["/bin/sh", "-c", '. "$0" && exec "$@"', str(env_file)]
    base = {"PATH": env["PATH"], "HOME": env["HOME"]}
    target = spec.target
    ctx.log.write(STAGE, f"importing {target}{' and calling the factory' if spec.factory else ''}")
    result = await run(
        ctx,
        STAGE,
        [*loader, python, "-c", _PROBE, target, "1" if spec.factory else "0", app_dir or "."],
        chdir=workdir,
        env=base,
        share_net=True,  # the app has its network at boot; an import that connects works
        quiet=True,
    )
    report_line = next((line for line in result.output if line.startswith(MARK)), None)
    if not result.ok or report_line is None:
        for line in result.output:
            ctx.emit(STAGE, line)
        raise BuildError(
            f"importing the entry point {target} failed: {exception_line(result.output)}"
            " (traceback above)",
            stage=STAGE,
        )
    for line in result.output:
        if not line.startswith(MARK):
            ctx.emit(STAGE, line)
    report = json.loads(report_line[len(MARK) :])
    ctx.log.write(STAGE, f"{target} imported: {report.get('type', 'callable')}")
    if spec.framework == "django":
        if not report.get("staticfiles"):
            ctx.log.write(STAGE, "collectstatic skipped: staticfiles or STATIC_ROOT not configured")
            return
        ctx.log.write(STAGE, "python -m django collectstatic --noinput")
        collected = await run(
            ctx,
            STAGE,
            [*loader, python, "-m", "django", "collectstatic", "--noinput"],
            chdir=workdir / app_dir if app_dir else workdir,
            env=base,
        )
        if not collected.ok:
            raise BuildError(f"collectstatic failed:\n{collected.tail(20)}", stage=STAGE)
