"""Project detection: how to build and run a source tree, decided by reading it (never running it).

`detect` is the entry point: root dir → package manager → dependencies → Python version →
framework and entry point → default start command. Every decision records its source file
(and line) and any warnings; a tree that cannot be detected raises `DetectionError` saying what
was looked for, what was found and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from phemeral.detect.command import default_command, resolve_start_command
from phemeral.detect.dependencies import collect_dependencies
from phemeral.detect.detection import Detection
from phemeral.detect.framework import decide_app
from phemeral.detect.manifests import read_uv_lock
from phemeral.detect.package_manager import decide_package_manager
from phemeral.detect.project import read_project
from phemeral.detect.python_version import decide_python_version
from phemeral.detect.root import decide_root
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError
from phemeral.models import ProjectOverrides

__all__ = ["Detection", "DetectionError", "detect", "resolve_start_command"]


def detect(
    root: Path,
    *,
    overrides: ProjectOverrides = ProjectOverrides(),  # noqa: B008 - frozen, immutable default
    available_versions: Sequence[str] = (),
    default_version: str = "3.12",
) -> Detection:
    """Detect the project under ``root`` (a checkout); raises `DetectionError`."""
    if not Path(root).is_dir():
        raise DetectionError(f"{root} is not a directory; point detection at a project folder.")
    tree = SourceTree(Path(root))
    return detect_tree(
        tree,
        overrides=overrides,
        available_versions=available_versions,
        default_version=default_version,
    )


def detect_tree(
    tree: SourceTree,
    *,
    overrides: ProjectOverrides,
    available_versions: Sequence[str],
    default_version: str,
) -> Detection:
    warnings: list[str] = []
    root = decide_root(tree, overrides.root_dir)
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
        override=overrides.python_version,
        available_versions=available_versions,
        default_version=default_version,
    )
    warnings += version.warnings
    app = decide_app(tree, project, deps)
    warnings += app.warnings
    spec = app.spec
    missing = None if deps.has(spec.server) else spec.server
    if missing:
        where = deps.files[0] if deps.files else "your dependencies"
        warnings.append(
            f"{missing} (the {spec.interface.upper()} server) is not in the dependencies; the "
            f"build adds it. Add {missing} to {where} to choose its version"
        )
    command = default_command(spec, app.app_dir)
    for path in tree.too_large:
        note = f"{path} is larger than {tree.max_file_bytes} bytes and was not read"
        if note not in warnings and not any(path in w for w in warnings):
            warnings.append(note)
    return Detection(
        root_dir=root.directory or ".",
        python_version=version.version,
        python_version_source=version.source,
        package_manager=manager.name,
        framework=app.framework,
        entrypoint=app.entrypoint,
        start_command=command,
        app_spec=spec,
        warnings=warnings,
        sources={
            "root_dir": root.source,
            "python_version": version.location,
            "package_manager": manager.source,
            "framework": app.framework_source,
            "entrypoint": app.entrypoint_source,
            "start_command": f"{app.framework} default: {spec.interface.upper()} → {spec.server}",
            **app.extra_sources,
        },
        missing_server=missing,
        app_dir=app.app_dir,
        workspace_root=(root.workspace_root or ".") if workspace_lock is not None else None,
    )
