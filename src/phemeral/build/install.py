"""Install a project's production dependencies into a fresh venv, per its package manager.

- ``uv``: ``uv sync --locked --no-default-groups --no-editable`` into the release's venv; a
  stale ``uv.lock`` fails the build ("run `uv lock`").
- ``poetry``: the locked main set as hashed pins (`phemeral.build.poetry`), installed with
  ``uv pip install --require-hashes --no-deps``, then the project itself (non-editable) unless
  ``package-mode = false``. Poetry itself never runs.
- ``pipenv``: the ``default`` set of ``Pipfile.lock`` as hashed pins (`phemeral.build.pipenv`),
  installed like Poetry's; a lone Pipfile's ``[packages]`` resolved afresh. Pipenv never runs.
- ``pip``: ``uv pip install -r requirements.txt``; for a ``[project]`` table without a lock,
  ``uv pip install .`` (with a build backend) or its dependencies only (without one).

pip and Pipenv projects get the venv ``python -m venv`` gives (pip, and setuptools + wheel
before Python 3.12): their code may expect them. Whatever the manager, a dependency that
imports ``pkg_resources`` outside a fallback (old gunicorn, celery, aiosql…) gets
``setuptools<81``, the last series that ships it, and the build log names who needed it.

Every command runs sandboxed as the app uid with the network shared. Two steps (see
`phemeral.build.cache`):

1. `prefetch`: the locked or pinned wheels go into the release's venv with ``--no-build`` (no
   code of the project or of a package runs), the only step that writes the project's cache;
   bytecode is compiled by the base interpreter in isolated mode (``-I -S``: no ``.pth`` runs);
2. `install`: the manager's own command completes the venv (sdists, the project itself); the
   cache it sees is an overlay whose writes are thrown away after the build.

A cache key of lock + interpreter + platform says in the log whether the cache hit, and why not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from phemeral.build import pipenv, poetry
from phemeral.build.runner import BuildContext, StepResult, run
from phemeral.errors import BuildError

STAGE = "install"


@dataclass(frozen=True)
class InstallPlan:
    manager: str  # uv | poetry | pip
    project_dir: Path  # absolute, inside the release's src/
    python: Path  # the base interpreter
    python_version: str  # 3.12.1
    venv: Path
    cache_dir: Path  # this app's uv cache
    keys_dir: Path  # cache keys known to be warm, and each project's last key
    project: str
    extra_packages: tuple[str, ...] = ()  # e.g. ("uvicorn",) when the start command needs it
    lock_root: Path | None = None  # where uv.lock lives (a workspace root) if not project_dir
    home: Path = Path("/nonexistent")  # a scratch HOME for the tools, removed after the build


@dataclass(frozen=True)
class CacheKey:
    key: str
    parts: Mapping[str, str]


def find_uv() -> Path:
    """The uv binary the builder runs: the one installed with Phemeral, else a real one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "uv", Path(sys.prefix) / "bin" / "uv"]
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory and "shims" not in Path(directory).parts:
            candidates.append(Path(directory) / "uv")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise BuildError("uv is not installed (scripts/bootstrap installs it)", stage=STAGE)


def platform_tag() -> str:
    return f"{sys.platform}-{platform.machine()}"


def input_files(plan: InstallPlan) -> list[Path]:
    """The files whose content decides the installed set, per manager."""
    d = plan.project_dir
    if plan.manager == "uv":
        root = plan.lock_root or d
        return [root / "uv.lock", d / "pyproject.toml"]
    if plan.manager == "poetry":
        return [d / "poetry.lock", d / "pyproject.toml"]
    if plan.manager == "pipenv":
        return [d / "Pipfile.lock", d / "Pipfile", d / "setup.py", d / "pyproject.toml"]
    reqs = sorted(d.glob("requirements*.txt")) + sorted(d.glob("requirements/*.txt"))
    return [*reqs, d / "pyproject.toml", d / "setup.py", d / "setup.cfg"]


def cache_key(
    manager: str,
    files: Mapping[str, bytes],
    python_version: str,
    platform_name: str,
    extras: Sequence[str],
) -> CacheKey:
    """Content address of an install's inputs (pure)."""
    parts: dict[str, str] = {
        "manager": manager,
        "python": python_version,
        "platform": platform_name,
    }
    for name, data in sorted(files.items()):
        parts[f"file:{name}"] = hashlib.sha256(data).hexdigest()[:16]
    parts["extras"] = ",".join(sorted(extras))
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return CacheKey(key=digest[:32], parts=parts)


def explain_miss(current: CacheKey, previous: Mapping[str, str] | None) -> str:
    """Why this install cannot reuse the previous build's download set (pure)."""
    if previous is None:
        return "first build of this project with this cache"
    if previous.get("manager") != current.parts.get("manager"):
        before, now = previous.get("manager"), current.parts.get("manager")
        return f"the package manager changed from {before} to {now}"
    reasons = []
    for name in sorted(set(current.parts) | set(previous)):
        before, now = previous.get(name), current.parts.get(name)
        if before == now:
            continue
        if name.startswith("file:"):
            label = name[5:]
            if before is None:
                reasons.append(f"{label} was added")
            elif now is None:
                reasons.append(f"{label} was removed")
            else:
                reasons.append(f"{label} changed")
        elif name == "python":
            reasons.append(f"Python changed from {before} to {now}")
        elif name == "extras":
            reasons.append(f"added servers changed ({before or 'none'} → {now or 'none'})")
        else:
            reasons.append(f"{name} changed from {before} to {now}")
    return ", ".join(reasons) or "the cache was cleared"


def _read_inputs(plan: InstallPlan) -> dict[str, bytes]:
    out = {}
    for path in input_files(plan):
        if path.is_file() and not path.is_symlink():
            out[os.path.relpath(path, plan.project_dir)] = path.read_bytes()
    return out


def _key_paths(plan: InstallPlan, key: CacheKey) -> tuple[Path, Path]:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", plan.project)
    return plan.keys_dir / f"{key.key}.warm", plan.keys_dir / f"project-{safe}.json"


def _env(plan: InstallPlan) -> dict[str, str]:
    env = {
        "HOME": str(plan.home),
        "XDG_CACHE_HOME": str(plan.home / ".cache"),
        "XDG_CONFIG_HOME": str(plan.home / ".config"),
        "UV_CACHE_DIR": str(plan.cache_dir),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "UV_LINK_MODE": "copy",  # hardlinks cannot cross the sandbox's bind mounts
        "UV_PROJECT_ENVIRONMENT": str(plan.venv),
        "UV_SYSTEM_CERTS": "1",
        "UV_NATIVE_TLS": "1",
        "VIRTUAL_ENV": str(plan.venv),
        "PATH": f"{plan.venv}/bin:/usr/local/bin:/usr/bin:/bin",
    }
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():
        env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"
    return env


async def install(plan: InstallPlan, ctx: BuildContext, *, bytecode: bool = True) -> str:
    """Create the venv and install; returns the cache key (the release's ``lock_hash``).

    ``bytecode`` False: the venv already has its bytecode (from `prefetch`)."""
    uv = str(find_uv())
    env = _env(plan)
    ro = [Path(uv)]
    rw = [plan.cache_dir]
    key = cache_key(
        plan.manager, _read_inputs(plan), plan.python_version, platform_tag(), plan.extra_packages
    )
    warm, last = _key_paths(plan, key)
    previous = _load_json(last)
    if warm.exists():
        ctx.log.write(
            STAGE, f"cache hit: the same dependency set was installed before (key {key.key[:12]})"
        )
    else:
        ctx.log.write(
            STAGE, f"cache miss because {explain_miss(key, previous)} (key {key.key[:12]})"
        )

    async def uv_run(
        args: list[str], *, cwd: Path | None = None, quiet: bool = False
    ) -> StepResult:
        return await run(
            ctx, STAGE, [uv, *args], chdir=cwd or plan.project_dir, env=env, share_net=True,
            ro=ro, rw=rw, quiet=quiet,
        )  # fmt: skip

    python = str(plan.venv / "bin" / "python")
    if plan.manager != "uv" and not (plan.venv / "bin" / "python").exists():
        # (uv sync creates the project environment itself; the prefetch may have made it)
        # pip and Pipenv users get what `python -m venv` gives them (pip; setuptools and wheel
        # before 3.12); uv and Poetry projects declare everything they need
        seed = ["--seed"] if plan.manager in ("pip", "pipenv") else []
        created = await uv_run(
            ["venv", "--quiet", "--no-project", *seed, "--python", str(plan.python),
             str(plan.venv)]
        )  # fmt: skip
        _check(created, "creating the virtual environment failed", ctx)
    if plan.manager == "uv":
        ctx.log.write(
            STAGE,
            "uv sync --locked --no-default-groups --no-editable "
            "(production dependencies from uv.lock)",
        )
        synced = await uv_run(
            [
                "sync",
                "--locked",
                "--no-default-groups",
                "--no-editable",
                "--python",
                str(plan.python),
            ]
        )
        _check(synced, "uv sync failed", ctx)
    elif plan.manager == "poetry":
        await _install_poetry(plan, ctx, uv_run, python)
    elif plan.manager == "pipenv":
        await _install_pipenv(plan, ctx, uv_run, python)
    else:
        await _install_pip(plan, ctx, uv_run, python)
    if plan.extra_packages:
        ctx.log.write(
            STAGE,
            f"adding {', '.join(plan.extra_packages)}: the start command needs it and the "
            "project does not depend on it",
        )
        added = await uv_run(["pip", "install", "--python", python, *plan.extra_packages])
        _check(added, f"installing {', '.join(plan.extra_packages)} failed", ctx)
    await _pkg_resources(plan, ctx, uv_run, python)
    frozen, _ = await asyncio.gather(
        uv_run(["pip", "freeze", "--python", python], quiet=True),
        _bytecode(plan, ctx, key.key, python, env, ro, rw) if bytecode else asyncio.sleep(0),
    )
    if frozen.ok:
        pins = [line for line in frozen.output if "==" in line or " @ " in line]
        ctx.log.write(STAGE, f"installed {len(pins)} packages: {', '.join(pins)}")
    plan.keys_dir.mkdir(parents=True, exist_ok=True)
    warm.touch()
    last.write_text(json.dumps(dict(key.parts), sort_keys=True))
    return key.key


def prefetch_steps(plan: InstallPlan, requirements: Path | None) -> list[list[str]]:
    """The uv commands of `prefetch` (pure): wheels only, one install command at most, so no
    interpreter of the venv is ever started after a package landed in it (a ``.pth`` file
    would run). ``requirements`` is the hashed pin file of a Poetry or Pipenv lock, if any."""
    python = str(plan.venv / "bin" / "python")
    no_build = ["--no-build", "--link-mode", "copy"]
    seed = ["--seed"] if plan.manager in ("pip", "pipenv") else []  # as install makes it
    make_venv = ["venv", "--quiet", "--no-project", *seed, "--python", str(plan.python),
                 str(plan.venv)]  # fmt: skip
    pip = ["pip", "install", *no_build, "--python", python]
    d = plan.project_dir
    if plan.manager == "uv":
        return [["sync", "--locked", *no_build, "--no-install-workspace", "--python",
                 str(plan.python)]]  # fmt: skip
    if plan.manager in ("poetry", "pipenv"):
        if requirements is None:
            return []
        return [make_venv, [*pip, "--require-hashes", "--no-deps", "-r", str(requirements)]]
    if (d / "requirements.txt").is_file():
        return [make_venv, [*pip, "-r", "requirements.txt", *plan.extra_packages]]
    if (d / "pyproject.toml").is_file():
        return [make_venv, [*pip, "-r", "pyproject.toml", *plan.extra_packages]]
    if plan.extra_packages:
        return [make_venv, [*pip, *plan.extra_packages]]
    return []


def _locked_pins(plan: InstallPlan) -> str | None:
    """The hashed pins of a Poetry or Pipenv lock (None without one, or when unusable)."""
    d = plan.project_dir
    try:
        if plan.manager == "poetry" and (d / "poetry.lock").is_file():
            chosen = poetry.plan(
                (d / "poetry.lock").read_text(),
                (d / "pyproject.toml").read_text(),
                plan.python_version,
            )
            return chosen.requirements_text() if chosen.packages else None
        if plan.manager == "pipenv" and (d / "Pipfile.lock").is_file():
            locked = pipenv.plan_lock((d / "Pipfile.lock").read_text())
            return locked.requirements_text() if locked.lines and locked.hashed else None
    except (OSError, ValueError, BuildError):
        return None
    return None


async def prefetch(plan: InstallPlan, ctx: BuildContext) -> bool:
    """Fill the project's cache (``plan.cache_dir``, writable only here) and the venv with the
    wheels the project pins, running no code of the project or of its packages.

    Best effort: what cannot be had without building (sdists, local paths) is left to `install`,
    which sees the cache read-only. Bytecode for this dependency set is compiled here too, by the
    base interpreter in isolated mode. True when it got that far (the venv has its bytecode).
    """
    uv = str(find_uv())
    env = {**_env(plan), "UV_LINK_MODE": "copy"}
    requirements = None
    pins = _locked_pins(plan)
    if pins:
        requirements = plan.home / "prefetch-requirements.txt"
        requirements.write_text(pins)
    started = time.monotonic()
    steps = prefetch_steps(plan, requirements)
    if not steps:
        ctx.log.write(STAGE, "prefetch: nothing pinned to fetch without building")
        return False
    try:
        for args in steps:
            result = await run(
                ctx, STAGE, [uv, *args], chdir=plan.project_dir, env=env, share_net=True,
                ro=[Path(uv)], rw=[plan.cache_dir], quiet=True,
            )  # fmt: skip
            if not result.ok:
                ctx.log.write(
                    STAGE,
                    "prefetch incomplete (the install step fetches the rest, uncached): "
                    + (result.tail(1) or f"exit {result.returncode}"),
                )
                return False
    finally:
        if requirements is not None:
            requirements.unlink(missing_ok=True)
    key = cache_key(
        plan.manager, _read_inputs(plan), plan.python_version, platform_tag(), plan.extra_packages
    )
    await _bytecode(plan, ctx, key.key, str(plan.python), env, [Path(uv)], [plan.cache_dir],
                    isolated=True)  # fmt: skip
    ctx.log.write(STAGE, f"prefetch: pinned wheels in place ({time.monotonic() - started:.1f} s)")
    return True


# Runs in the sandbox with the venv's python: "restore" copies cached __pycache__ folders into
# site-packages; "save" compiles site-packages to checked-hash .pyc files (valid for any copy
# of the same sources, whatever their mtimes) and stores the __pycache__ folders.
_PYC_TOOL = r"""
import compileall, os, py_compile, shutil, sys
mode, site, store = sys.argv[1:4]
count = 0
if mode == "restore":
    for dirpath, dirnames, filenames in os.walk(store):
        if os.path.basename(dirpath) != "__pycache__":
            continue
        target = os.path.join(site, os.path.relpath(dirpath, store))
        if os.path.isdir(os.path.dirname(target)):
            shutil.copytree(dirpath, target, dirs_exist_ok=True)
            count += len(filenames)
else:
    try:
        compileall.compile_dir(site, quiet=2, workers=0,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except (OSError, NotImplementedError):
        compileall.compile_dir(site, quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    tmp = store + ".partial-" + str(os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(site):
        if os.path.basename(dirpath) == "__pycache__":
            shutil.copytree(dirpath, os.path.join(tmp, os.path.relpath(dirpath, site)))
            count += len(filenames)
    shutil.rmtree(store, ignore_errors=True)
    os.replace(tmp, store)
print(count)
"""


async def _bytecode(
    plan: InstallPlan,
    ctx: BuildContext,
    key: str,
    python: str,
    env: Mapping[str, str],
    ro: Sequence[Path],
    rw: Sequence[Path],
    *,
    isolated: bool = False,
) -> None:
    """Give the fresh venv compiled bytecode: from the cache when this dependency set was
    compiled before (a warm rebuild then imports fast), else compile it once and keep it."""
    sites = sorted(plan.venv.glob("lib/python*/site-packages"))
    if not sites:
        return
    store = plan.cache_dir / "phemeral-bytecode" / key
    mode = "restore" if store.is_dir() else "save"
    if mode == "save":
        store.parent.mkdir(parents=True, exist_ok=True)
        if ctx.uid is not None:
            os.chown(store.parent, ctx.uid, ctx.uid)
    started = time.monotonic()
    flags = ["-I", "-S"] if isolated else []  # isolated: no site, no .pth of the venv runs
    result = await run(
        ctx, STAGE, [python, *flags, "-c", _PYC_TOOL, mode, str(sites[0]), str(store)],
        chdir=plan.project_dir, env=env, ro=ro, rw=rw, quiet=True,
    )  # fmt: skip
    took = time.monotonic() - started
    if not result.ok:
        ctx.log.write(
            STAGE, f"bytecode not prepared (imports compile it instead): {result.tail(3)}"
        )
        return
    count = result.output[-1].strip() if result.output else "?"
    if mode == "restore":
        ctx.log.write(
            STAGE, f"bytecode: {count} compiled files reused from the cache ({took:.1f} s)"
        )
    else:
        ctx.log.write(
            STAGE, f"bytecode: compiled {count} files, kept for the next build ({took:.1f} s)"
        )


async def _install_poetry(
    plan: InstallPlan, ctx: BuildContext, uv_run: _UvRun, python: str
) -> None:
    lock = plan.project_dir / "poetry.lock"
    pyproject = plan.project_dir / "pyproject.toml"
    if not lock.is_file():
        # no lock: poetry-core builds the project and uv resolves its dependencies afresh
        ctx.log.write(
            STAGE, "no poetry.lock: installing the project with its declared dependencies"
        )
        result = await uv_run(["pip", "install", "--python", python, "."])
        _check(result, "installing the project failed", ctx)
        return
    chosen = poetry.plan(lock.read_text(), pyproject.read_text(), plan.python_version)
    ctx.log.write(
        STAGE, f"poetry.lock: {len(chosen.packages)} packages in the main group, installed by hash"
    )
    requirements = plan.home / "poetry-requirements.txt"
    requirements.write_text(chosen.requirements_text())
    if ctx.uid is not None:
        os.chown(requirements, ctx.uid, ctx.uid)
    try:
        if chosen.packages:
            result = await uv_run(
                ["pip", "install", "--python", python, "--require-hashes", "--no-deps",
                 "-r", str(requirements)]
            )  # fmt: skip
            _check(result, "installing the locked packages failed", ctx)
    finally:
        requirements.unlink(missing_ok=True)
    missing = poetry.missing_root_package(
        pyproject.read_text(), lambda rel: (plan.project_dir / rel).exists()
    )
    if chosen.install_root and missing:
        ctx.log.write(STAGE, f"warning: {missing}")
    elif chosen.install_root:
        ctx.log.write(STAGE, "installing the project itself (non-editable)")
        result = await uv_run(["pip", "install", "--python", python, "--no-deps", "."])
        if not result.ok:
            # Poetry installs the root itself, never through the declared backend, so a
            # project can run under Poetry with a backend that cannot build it (the legacy
            # `poetry.masonry.api`, a missing readme…): its dependencies are in, and the app
            # runs from its folder, as after `poetry install --no-root`
            ctx.log.write(
                STAGE,
                "warning: the project itself could not be built "
                f"({_first_error(result.output)}); continuing like `poetry install --no-root` "
                "(the app runs from its folder). Fix the [build-system] table (e.g. "
                'build-backend = "poetry.core.masonry.api") or set package-mode = false',
            )
    else:
        ctx.log.write(STAGE, "package-mode = false: the project itself is not installed")


async def _install_pip(plan: InstallPlan, ctx: BuildContext, uv_run: _UvRun, python: str) -> None:
    d = plan.project_dir
    requirements = d / "requirements.txt"
    pyproject = d / "pyproject.toml"
    if requirements.is_file():
        ctx.log.write(STAGE, "uv pip install -r requirements.txt")
        result = await uv_run(["pip", "install", "--python", python, "-r", "requirements.txt"])
    elif pyproject.is_file() and "[build-system]" in pyproject.read_text():
        ctx.log.write(STAGE, "uv pip install . (the project, non-editable, with its dependencies)")
        result = await uv_run(["pip", "install", "--python", python, "."])
    elif pyproject.is_file():
        ctx.log.write(
            STAGE, "uv pip install -r pyproject.toml (no build backend: dependencies only)"
        )
        result = await uv_run(["pip", "install", "--python", python, "-r", "pyproject.toml"])
    elif (d / "setup.py").is_file() or (d / "setup.cfg").is_file():
        ctx.log.write(STAGE, "uv pip install . (setup.py)")
        result = await uv_run(["pip", "install", "--python", python, "."])
    else:
        ctx.log.write(STAGE, "no dependencies declared")
        return
    _check(result, "installing dependencies failed", ctx)


async def _install_pipenv(
    plan: InstallPlan, ctx: BuildContext, uv_run: _UvRun, python: str
) -> None:
    lock = plan.project_dir / "Pipfile.lock"
    if lock.is_file():
        chosen = pipenv.plan_lock(lock.read_text())
        ctx.log.write(
            STAGE, f"Pipfile.lock: {len(chosen.lines)} packages in [default], installed by hash"
        )
    else:
        chosen = pipenv.plan_pipfile((plan.project_dir / "Pipfile").read_text())
        ctx.log.write(
            STAGE, f"Pipfile (no lock): {len(chosen.lines)} packages, versions resolved afresh"
        )
    requirements = plan.home / "pipenv-requirements.txt"
    requirements.write_text(chosen.requirements_text())
    if ctx.uid is not None:
        os.chown(requirements, ctx.uid, ctx.uid)
    hashed = ["--require-hashes", "--no-deps"] if chosen.hashed else []
    try:
        if chosen.lines:
            result = await uv_run(
                ["pip", "install", "--python", python, *hashed, "-r", str(requirements)]
            )
            _check(result, "installing the Pipenv packages failed", ctx)
    finally:
        requirements.unlink(missing_ok=True)
    if chosen.install_root:
        ctx.log.write(STAGE, "installing the project itself (non-editable)")
        result = await uv_run(["pip", "install", "--python", python, "--no-deps", "."])
        _check(result, "installing the project failed", ctx)


# Runs in the sandbox with the venv's python: prints the distributions whose code imports
# pkg_resources outside a `try:` or an `if` about pkg_resources (a fallback does not need it),
# then the installed setuptools version (or "none").
_PKG_RESOURCES_TOOL = r"""
import ast, importlib.metadata as md, os, sys
site = sys.argv[1]
needers = []
for dist in md.distributions():
    name = dist.metadata["Name"] or "?"
    if name.lower() in ("setuptools", "pip", "wheel", "pkg-resources"):
        continue
    for f in dist.files or ():
        if not str(f).endswith(".py") or "/tests/" in str(f):
            continue
        path = os.path.join(site, str(f))
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if "pkg_resources" not in text:
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        guarded = set()
        for node in ast.walk(tree):
            # a fallback (try/except) or a check that it is already there
            # (`if "pkg_resources" in sys.modules:`) does not need it
            fallback = isinstance(node, ast.Try) or (
                isinstance(node, ast.If) and "pkg_resources" in ast.dump(node.test)
            )
            if fallback:
                for sub in ast.walk(node):
                    guarded.add(id(sub))
        hit = False
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                hit = hit or any(a.name.split(".")[0] == "pkg_resources" for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                hit = hit or (node.module or "").split(".")[0] == "pkg_resources"
        if hit:
            needers.append(f"{name} {dist.version} ({f})")
            break
for n in needers:
    print("needs", n)
try:
    print("setuptools", md.version("setuptools"))
except md.PackageNotFoundError:
    print("setuptools none")
"""


async def _pkg_resources(plan: InstallPlan, ctx: BuildContext, uv_run: _UvRun, python: str) -> None:
    """Give code that imports ``pkg_resources`` a setuptools that still ships it (< 81)."""
    sites = sorted(plan.venv.glob("lib/python*/site-packages"))
    if not sites:
        return
    result = await run(
        ctx, STAGE, [python, "-c", _PKG_RESOURCES_TOOL, str(sites[0])],
        chdir=plan.project_dir, env=_env(plan), ro=[], rw=[], quiet=True,
    )  # fmt: skip
    if not result.ok:
        return
    needers = [line[6:] for line in result.output if line.startswith("needs ")]
    installed = next(
        (line.split()[1] for line in result.output if line.startswith("setuptools ")), "none"
    )
    decision = setuptools_decision(needers, installed)
    if decision is None:
        return
    ctx.log.write(STAGE, decision)
    added = await uv_run(["pip", "install", "--python", python, "setuptools<81"])
    _check(added, "installing setuptools<81 (for pkg_resources) failed", ctx)


def setuptools_decision(needers: Sequence[str], installed: str) -> str | None:
    """The build-log line when ``setuptools<81`` must be added, else None (pure)."""
    if not needers:
        return None
    if installed != "none":
        try:
            if int(installed.split(".")[0]) < 81:
                return None
        except ValueError:
            return None
    who = ", ".join(needers[:5]) + (f" and {len(needers) - 5} more" if len(needers) > 5 else "")
    have = "is not installed" if installed == "none" else f"{installed} no longer ships it"
    return (
        f"adding setuptools<81: {who} imports pkg_resources, and setuptools {have}; "
        "upgrade those packages (or pin setuptools<81 yourself) to silence this"
    )


def _first_error(output: Sequence[str]) -> str:
    """The most telling line of a failed command's output (pure)."""
    for line in reversed(output):
        text = line.strip()
        if re.search(r"Error|error:", text):
            return text[:200]
    return output[-1].strip()[:200] if output else "no output"


class _UvRun(Protocol):  # the shape of the local uv_run closure
    async def __call__(
        self, args: list[str], *, cwd: Path | None = None, quiet: bool = False
    ) -> StepResult: ...


_STALE = re.compile(r"needs to be updated|lockfile .* out of date|--locked", re.IGNORECASE)
_UNRESOLVABLE = re.compile(
    r"No solution found|not found in the package registry|Because .* and you require|"
    r"no version of|Distribution not found",
    re.IGNORECASE,
)


def classify_failure(what: str, output: str) -> str:
    """A message for people from a failed install's output (pure)."""
    tail = "\n".join(output.strip().splitlines()[-25:])
    if "needs to be updated" in output or (_STALE.search(output) and "uv.lock" in output):
        return (
            "uv.lock is out of date with pyproject.toml; run `uv lock` and commit uv.lock\n" + tail
        )
    if _UNRESOLVABLE.search(output):
        return f"the dependencies cannot be resolved:\n{tail}"
    if "hash" in output.lower() and "mismatch" in output.lower():
        return f"a downloaded file does not match the hash in the lock:\n{tail}"
    return f"{what}:\n{tail}"


_NO_BUILD = re.compile(
    r"Failed to build `?([A-Za-z0-9][A-Za-z0-9._-]*)(?:==|@| )|"
    r"([A-Za-z0-9][A-Za-z0-9._-]*)==\S+ has no wheels? (?:with a matching|for)|"
    r"Failed to (?:download and )?build:? `?([A-Za-z0-9][A-Za-z0-9._-]*)"
)


def older_python_hint(
    message: str, version: str, source: str, installed: Sequence[str]
) -> str | None:
    """When nothing pinned the Python and a package did not build for the default, name the
    older installed versions to pin (pure). The build never switches Python by itself: the
    version stays what the project's files say, and the log says how to change it."""
    if source != "platform default":
        return None
    match = _NO_BUILD.search(message)
    if match is None:
        return None
    package = next(g for g in match.groups() if g)

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".")[:2])

    older = sorted((v for v in installed if (3, 8) <= key(v) < key(version)), key=key, reverse=True)
    if not older:
        return (
            f"{package} does not build for Python {version}, the platform default (nothing in the "
            "project pins a version), and no older Python is installed here. Upgrade "
            f"{package} to a release that supports {version}."
        )
    return (
        f"{package} does not build for Python {version}, the platform default (nothing in the "
        f"project pins a version). Older Pythons installed here: {', '.join(older)}. Pin one in "
        f".python-version (e.g. `{older[0]}`), or upgrade {package} to a release that supports "
        f"{version}."
    )


_OLD_CODE = re.compile(
    r"(ModuleNotFoundError: No module named '(?:distutils|imp|asynchat|asyncore|smtpd)\b|"
    r"ModuleNotFoundError: No module named '[\w.]*six\.moves|"
    r"ImportError: cannot import name '\w+' from 'collections'|"
    r"AttributeError: module 'collections' has no attribute|"
    r"AttributeError: module 'pkgutil' has no attribute 'ImpImporter')"
)


def unpinned_import_hint(
    message: str, version: str, source: str, installed: Sequence[str]
) -> str | None:
    """When nothing pinned the Python and the import failed on something newer Pythons
    removed (distutils, imp, six.moves' importer, collections ABC aliases…), name the older
    installed versions to pin (pure)."""
    if source != "platform default" or not _OLD_CODE.search(message):
        return None

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".")[:2])

    older = sorted((v for v in installed if (3, 8) <= key(v) < key(version)), key=key, reverse=True)
    where = f"Older Pythons installed here: {', '.join(older)}. " if older else ""
    return (
        f"The code (or a dependency) uses something Python {version} no longer has, and nothing "
        f"in the project pins a version ({version} is the platform default). {where}Pin the "
        "Python it was written for in .python-version, or upgrade the dependency named in the "
        "traceback."
    )


def _check(result: StepResult, what: str, ctx: BuildContext) -> None:
    if result.ok:
        return
    if ctx.cgroup is not None and ctx.cgroup.oom_killed():
        raise BuildError(
            f"{what}: the build ran out of memory (limit {ctx.memory_mb} MiB)", stage=STAGE
        )
    raise BuildError(classify_failure(what, "\n".join(result.output)), stage=STAGE)


def _load_json(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None
