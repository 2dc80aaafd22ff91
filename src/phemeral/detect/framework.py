"""Which framework the project uses and where its application object is.

Framework names come from the production dependencies; the code confirms them: Django needs
``manage.py`` and ``django``; FastAPI and Flask need an application object found in the AST.
When several frameworks are dependencies, the one whose application object ranks best wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect.dependencies import Dependencies
from phemeral.detect.django import detect_django, module_file
from phemeral.detect.entrypoint import (
    AppCandidate,
    describe_candidates,
    python_files,
    scan_entrypoints,
    scan_module,
)
from phemeral.detect.manifests import join
from phemeral.detect.project import ProjectFiles
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError
from phemeral.models import AppSpec

FRAMEWORKS = ("django", "fastapi", "flask")
ASGI_SERVERS = ("uvicorn",)


@dataclass
class AppDecision:
    framework: str
    framework_source: str
    entrypoint: str  # display form: "main:app" / "app:create_app()"
    entrypoint_source: str
    spec: AppSpec
    app_dir: str
    warnings: list[str] = field(default_factory=list)
    extra_sources: dict[str, str] = field(default_factory=dict)


def _files(deps: Dependencies) -> str:
    return ", ".join(deps.files) or "no dependency file"


def decide_app(tree: SourceTree, project: ProjectFiles, deps: Dependencies) -> AppDecision:
    direct = [f for f in FRAMEWORKS if f in deps.direct]
    present = direct or [f for f in FRAMEWORKS if f in deps.resolved]

    def source_of(framework: str) -> str:
        return deps.direct.get(framework) or (deps.files[-1] if deps.files else "")

    django_dir = _manage_py_dir(tree, project) if "django" in present else None
    if django_dir is not None:
        asgi_hint = deps.has("channels") or deps.has("daphne")
        base = join(project.directory, django_dir) if django_dir else project.directory
        found = detect_django(tree, base, asgi_hint)
        spec = AppSpec(
            framework="django",
            interface="asgi" if found.interface == "asgi" else "wsgi",
            target=found.target,
            server="uvicorn" if found.interface == "asgi" else "gunicorn",
            django_settings_module=found.settings_module,
        )
        return AppDecision(
            "django",
            source_of("django"),
            found.target,
            found.source,
            spec,
            django_dir,
            found.warnings,
            {"django_settings_module": found.settings_source},
        )

    configured = project.pyproject.fastapi_entrypoint if project.pyproject else None
    if configured is not None and "fastapi" in present:
        return _configured_fastapi(tree, project, configured, source_of("fastapi"))

    scan = scan_entrypoints(tree, project.directory)
    usable = [c for c in scan.candidates if c.framework in present]
    callable_now = [c for c in usable if not c.needs]
    if usable and not callable_now:
        raise DetectionError(_needs_arguments_message(usable))
    usable = callable_now
    if not usable:
        raise DetectionError(
            _no_app_message(
                project, deps, present, scan.candidates, scan.hidden, scan.files_scanned
            )
        )
    best = usable[0]
    ties = [c for c in usable[1:] if c.rank() == best.rank() and c.target != best.target]
    if ties:
        raise DetectionError(
            "Several application objects are equally good entry points: "
            f"{describe_candidates([best, *ties])}. Keep one, name the one to serve `app`, or "
            "set a custom start command."
        )
    warnings: list[str] = []
    others = [f for f in present if f != best.framework and f != "django"]
    if others:
        warnings.append(
            f"{', '.join(others)} is also a dependency; serving the {best.framework} app "
            f"{best.target} found in {best.file}"
        )
    if "django" in present:
        warnings.append("django is a dependency but there is no manage.py; not treated as Django")
    return AppDecision(
        best.framework,
        source_of(best.framework),
        f"{best.target}()" if best.factory else best.target,
        f"{best.file}:{best.line}",
        _spec(best),
        best.app_dir,
        warnings,
    )


def _manage_py_dir(tree: SourceTree, project: ProjectFiles) -> str | None:
    """Where manage.py is, relative to the project dir: itself, else the only one ≤ 2 deep."""
    if project.has_manage_py:
        return ""
    found = [
        path
        for path in python_files(tree, project.directory, max_depth=2)
        if path.endswith("/manage.py")
    ]
    if len(found) != 1:
        return None
    rel = found[0][len(project.directory) + 1 :] if project.directory else found[0]
    return rel.rpartition("/")[0]


def _configured_fastapi(
    tree: SourceTree, project: ProjectFiles, configured: str, framework_source: str
) -> AppDecision:
    """``[tool.fastapi] entrypoint``: used as written, but it must resolve (never a fallback)."""
    assert project.pyproject is not None
    where = project.pyproject.fastapi_entrypoint_source
    module, _, attr = configured.partition(":")
    found = None
    for app_dir in ("", "src"):
        base = join(project.directory, app_dir) if app_dir else project.directory
        path = module_file(tree, base, module) if module.replace(".", "").isidentifier() else None
        text = tree.read_text(path) if path else None
        if path and text is not None:
            found = (app_dir, path, scan_module(text, path, module, app_dir))
            break
    if found is None or not attr.isidentifier():
        raise DetectionError(
            f"{where}: [tool.fastapi] entrypoint = {configured!r} does not resolve: looked for "
            f"module {module!r} in {project.directory or 'the project root'} and its src/ folder "
            f"and for an attribute name after ':'. Fix it to `package.module:app`."
        )
    app_dir, path, scan = found
    factory = (
        scan is not None
        and attr in scan.functions
        and attr not in scan.instances
        and attr not in scan.reexports
    )
    if scan is None or not (attr in scan.instances or attr in scan.reexports or factory):
        raise DetectionError(
            f"{where}: [tool.fastapi] entrypoint = {configured!r}, but {path} does not bind "
            f"{attr!r} at module level. Fix the entrypoint or define `{attr} = FastAPI()` there."
        )
    if factory:
        _, line, needs = scan.functions[attr]
        if needs:
            raise DetectionError(
                f"{where}: [tool.fastapi] entrypoint = {configured!r} is a factory that needs "
                f"{_params(needs)}; point the entrypoint at a module-level "
                f"`app = {attr}(...)` that passes them, or set a custom start command."
            )
    elif attr in scan.instances:
        line = scan.instances[attr][1]
    else:
        line = scan.reexports[attr][2]
    spec = AppSpec("fastapi", "asgi", f"{module}:{attr}", factory=factory, server="uvicorn")
    return AppDecision(
        "fastapi",
        framework_source,
        f"{module}:{attr}()" if factory else f"{module}:{attr}",
        f"{path}:{line} (from {where})",
        spec,
        app_dir,
    )


def _params(needs: tuple[str, ...]) -> str:
    names = " and ".join(f"`{n}`" for n in needs)
    return f"the arguments {names}" if len(needs) > 1 else f"the argument {names}"


def _needs_arguments_message(candidates: list[AppCandidate]) -> str:
    """No app can be built without arguments: say which ones, and how to pass them."""
    best = candidates[0]
    args = ", ".join(f"{n}=..." for n in best.needs)
    server = "uvicorn" if best.framework == "fastapi" else "gunicorn"
    example = (
        f"gunicorn --bind 0.0.0.0:$PORT '{best.module}:{best.attr}({args})'"
        if server == "gunicorn"
        else f"a module with `app = {best.attr}({args})` served by uvicorn"
    )
    return (
        f"The only application found is the factory {best.target}() ({best.file}:{best.line}), "
        f"and it needs {_params(best.needs)} with no default, so it cannot be called as is. "
        f"Give {', '.join(best.needs)} a default value, add a module-level "
        f"`app = {best.attr}({args})` (e.g. in wsgi.py), or set a custom start command such as "
        f"{example}."
    )


def _spec(candidate: AppCandidate) -> AppSpec:
    asgi = candidate.framework == "fastapi"
    return AppSpec(
        framework="fastapi" if asgi else "flask",
        interface="asgi" if asgi else "wsgi",
        target=candidate.target,
        factory=candidate.factory,
        server="uvicorn" if asgi else "gunicorn",
    )


def _no_app_message(
    project: ProjectFiles,
    deps: Dependencies,
    present: list[str],
    candidates: list[AppCandidate],
    hidden: list[str],
    scanned: list[str],
) -> str:
    where = project.directory or "the project root"
    if "django" in present:
        return (
            f"django is a dependency ({deps.direct.get('django', _files(deps))}) but {where} has "
            "no manage.py. Looked for manage.py next to the dependency files; found none. Commit "
            "manage.py (`django-admin startproject` creates it) or set root_dir to its folder."
        )
    if candidates:
        frameworks = sorted({c.framework for c in candidates})
        return (
            f"Found {describe_candidates(candidates[:5])}, but {' and '.join(frameworks)} is not "
            f"in the dependencies ({_files(deps)}). Add it there."
        )
    if not present:
        seen = sorted(deps.direct)[:12]
        return (
            "No supported framework. Looked for fastapi, flask or django among the production "
            f"dependencies in {_files(deps)}; found "
            f"{', '.join(seen) if seen else 'no dependencies'}. Add your framework there (Phemeral "
            "serves FastAPI, Flask and Django apps), or set a custom start command."
        )
    names = " or ".join(f"`app = {'FastAPI' if f == 'fastapi' else 'Flask'}()`" for f in present)
    detail = f" Seen: {'; '.join(hidden)}." if hidden else ""
    files = ", ".join(scanned[:10]) or "no Python file mentioning it"
    return (
        f"{' and '.join(present)} is a dependency, but no application object was found. Looked "
        f"for a module-level {names}, or a create_app()/make_app() factory, in {files}.{detail} "
        "Define the app at module level (servers import the module; code under "
        '`if __name__ == "__main__":` never runs), or set a custom start command.'
    )
