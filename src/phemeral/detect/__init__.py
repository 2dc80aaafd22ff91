"""Project detection: how to build and run a source tree, decided by reading it (never running it).

`detect` is the entry point: root dir → package manager → dependencies → Python version →
framework and entry point → default start command. Every decision records its source file
(and line) and any warnings; a tree that cannot be detected raises `DetectionError` saying what
was looked for, what was found and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from phemeral.detect.binding import server_of, split_steps
from phemeral.detect.command import default_command, resolve_start_command, why_start_command
from phemeral.detect.declared import Declarations, read_declarations, read_root_config
from phemeral.detect.dependencies import Dependencies, collect_dependencies
from phemeral.detect.detection import Detection
from phemeral.detect.framework import AppDecision, decide_app
from phemeral.detect.manifests import Lockfile, read_uv_lock
from phemeral.detect.package_manager import ManagerDecision, decide_package_manager
from phemeral.detect.project import read_project
from phemeral.detect.python_version import VersionDecision, decide_python_version
from phemeral.detect.root import RootDecision, decide_root
from phemeral.detect.servers import choose_server
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError
from phemeral.models import ProjectOverrides

__all__ = [
    "Detection",
    "DetectionError",
    "detect",
    "resolve_start_command",
    "why_start_command",
]


def detect(
    root: Path,
    *,
    overrides: ProjectOverrides = ProjectOverrides(),  # noqa: B008 - frozen, immutable default
    available_versions: Sequence[str] = (),
    default_version: str = "3.12",
    need_app: bool = True,
) -> Detection:
    """Detect the project under ``root`` (a checkout); raises `DetectionError`.

    ``need_app=False`` (a custom start command will run): a framework or entry point that
    cannot be found is a warning, not an error; only the install decisions must succeed.
    """
    if not Path(root).is_dir():
        raise DetectionError(f"{root} is not a directory; point detection at a project folder.")
    tree = SourceTree(Path(root))
    return detect_tree(
        tree,
        overrides=overrides,
        available_versions=available_versions,
        default_version=default_version,
        need_app=need_app,
    )


def detect_tree(
    tree: SourceTree,
    *,
    overrides: ProjectOverrides,
    available_versions: Sequence[str],
    default_version: str,
    need_app: bool = True,
) -> Detection:
    warnings: list[str] = []
    root_config = read_root_config(tree)
    config_root = root_config.values.get("root_dir") if root_config else None
    root_override = overrides.root_dir
    if root_override is None and config_root is not None:
        root_override = str(config_root.value)
    try:
        root = decide_root(tree, root_override)
    except DetectionError as exc:
        if overrides.root_dir is None and config_root is not None:
            raise DetectionError(
                exc.message.replace(
                    "The project setting root_dir", f"{config_root.location}: root_dir"
                )
            ) from None
        raise
    if overrides.root_dir is None and config_root is not None:
        root = replace(root, source=config_root.location)
    declared = read_declarations(tree, root.directory, root_config)
    warnings += declared.warnings
    config_version = declared.settings.get("python_version")
    version_override = overrides.python_version
    if version_override is None and config_version is not None:
        version_override = str(config_version[0])
    warnings += root.warnings
    project = read_project(tree, root.directory)
    warnings += project.warnings
    workspace_lock = (
        read_uv_lock(tree, root.workspace_root, warnings)
        if root.workspace_root is not None and project.uv_lock is None
        else None
    )
    manager = decide_package_manager(
        project, overrides.package_manager, workspace_lock.path if workspace_lock else None
    )
    warnings += manager.warnings
    deps = collect_dependencies(project, manager.name, workspace_lock)
    version = decide_python_version(
        tree,
        root.directory,
        pyproject=project.pyproject,
        uv_lock=project.uv_lock or workspace_lock,
        pipfile=project.pipfile,
        override=version_override,
        available_versions=available_versions,
        default_version=default_version,
    )
    warnings += version.warnings
    version_source = version.source
    version_location = version.location
    if overrides.python_version is None and config_version is not None:
        version_source = version_location = str(config_version[1])
        version = replace(version, source=version_source, location=version_location)
    # an entry point is needed only for the autodetected command: a custom or declared one
    # (Procfile, phemeral.toml, …) rescues a project whose app detection cannot find
    try:
        app: AppDecision | None = decide_app(tree, project, deps)
    except DetectionError as exc:
        if need_app and declared.start is None:
            raise
        app = None
        runs = "the declared start command" if declared.start else "the custom start command"
        warnings.append(f"no entry point autodetected ({runs} runs): {exc}")
    if app is None:
        return _without_app(tree, root, version, manager, deps, warnings, workspace_lock, declared)
    warnings += app.warnings
    server, server_reason = choose_server(app.spec, deps)
    spec = replace(app.spec, server=server)
    autodetected = default_command(spec, app.app_dir)
    command, command_source = autodetected, "autodetected"
    if declared.start is not None:
        command, command_source = declared.start.command, declared.start.source
    missing = _missing_server(command, deps.has)
    if missing:
        where = deps.files[0] if deps.files else "your dependencies"
        what = (
            "the start command's server"
            if declared.start
            else (f"the {spec.interface.upper()} server")
        )
        warnings.append(
            f"{missing} ({what}) is not in the dependencies; the "
            f"build adds it. Add {missing} to {where} to choose its version"
        )
    for path in tree.too_large:
        note = f"{path} is larger than {tree.max_file_bytes} bytes and was not read"
        if note not in warnings and not any(path in w for w in warnings):
            warnings.append(note)
    return Detection(
        root_dir=root.directory or ".",
        python_version=version.version,
        python_version_source=version_source,
        package_manager=manager.name,
        framework=app.framework,
        entrypoint=app.entrypoint,
        start_command=command,
        app_spec=spec,
        warnings=warnings,
        sources={
            "root_dir": root.source,
            "python_version": version_location,
            "package_manager": manager.source,
            "framework": app.framework_source,
            "entrypoint": app.entrypoint_source,
            "start_command": (
                declared.start.location
                if declared.start is not None
                else f"{app.framework} default: {spec.interface.upper()} → {spec.server}"
            ),
            **({"server": server_reason} if server_reason else {}),
            **app.extra_sources,
            **_declared_sources(declared),
        },
        missing_server=missing,
        app_dir=app.app_dir,
        workspace_root=(root.workspace_root or ".") if workspace_lock is not None else None,
        start_command_source=command_source,
        autodetected_command=autodetected,
        declared=declared,
        settings={
            key: declared.settings[key][0]
            for key in ("health_check_path", "idle_timeout", "release_timeout")
            if key in declared.settings
        },
        dependency_names=deps.resolved | frozenset(deps.direct),
    )


def _without_app(
    tree: SourceTree,
    root: RootDecision,
    version: VersionDecision,
    manager: ManagerDecision,
    deps: Dependencies,
    warnings: list[str],
    workspace_lock: Lockfile | None,
    declared: Declarations,
) -> Detection:
    """The install decisions only: the start command is the project's own (custom or
    declared), so no entry point is needed."""
    command = declared.start.command if declared.start is not None else ""
    missing = _missing_server(command, deps.has) if command else None
    for path in tree.too_large:
        note = f"{path} is larger than {tree.max_file_bytes} bytes and was not read"
        if note not in warnings:
            warnings.append(note)
    return Detection(
        root_dir=root.directory or ".",
        python_version=version.version,
        python_version_source=version.source,
        package_manager=manager.name,
        framework="",
        entrypoint="",
        start_command=command,
        app_spec=None,
        warnings=warnings,
        sources={
            "root_dir": root.source,
            "python_version": version.location,
            "package_manager": manager.source,
            **({"start_command": declared.start.location} if declared.start else {}),
            **_declared_sources(declared),
        },
        missing_server=missing,
        workspace_root=(root.workspace_root or ".") if workspace_lock is not None else None,
        dependency_names=deps.resolved | frozenset(deps.direct),
        start_command_source=declared.start.source if declared.start else "autodetected",
        declared=declared,
        settings={
            key: declared.settings[key][0]
            for key in ("health_check_path", "idle_timeout", "release_timeout")
            if key in declared.settings
        },
    )


def _missing_server(command: str, has: Callable[[str], bool]) -> str | None:
    """The server package ``command`` starts when the dependencies lack it."""
    server = server_of(split_steps(command)[-1])
    package = {"waitress-serve": "waitress", "fastapi": "fastapi-cli"}.get(server or "", server)
    return package if package and not has(package) else None


def _declared_sources(declared: Declarations) -> dict[str, str]:
    found = {
        key: str(where)
        for key, (_value, where) in declared.settings.items()
        if key in ("health_check_path", "idle_timeout", "release_timeout")
    }
    if declared.release is not None:
        found["release_command"] = declared.release.location
    for name, proc in declared.processes.items():
        found[f"process.{name}"] = proc.location
    return found
