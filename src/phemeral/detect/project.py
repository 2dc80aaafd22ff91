"""Everything detection reads about one project directory, gathered once."""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect.manifests import (
    Lockfile,
    Pipfile,
    Pyproject,
    join,
    read_pipfile,
    read_pipfile_lock,
    read_poetry_lock,
    read_pyproject,
    read_setup,
    read_uv_lock,
)
from phemeral.detect.requirements import Dependency, RequirementsFile, parse_requirements
from phemeral.detect.tree import SourceTree


@dataclass
class ProjectFiles:
    directory: str  # relative to the tree root, "" for the root itself
    pyproject: Pyproject | None
    requirements: RequirementsFile | None
    uv_lock: Lockfile | None
    poetry_lock: Lockfile | None
    pipfile: Pipfile | None
    pipfile_lock: Lockfile | None
    other_locks: list[str]  # lockfiles of tools we do not run (pdm.lock, Pipfile.lock, ...)
    has_setup: bool  # setup.py / setup.cfg
    has_manage_py: bool
    setup_dependencies: list[Dependency] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_python_project(self) -> bool:
        """A manifest or lockfile we can install from (a tooling-only pyproject does not count)."""
        return bool(
            (self.pyproject and self.pyproject.is_manifest)
            or self.requirements
            or self.uv_lock
            or self.poetry_lock
            or self.pipfile
            or self.pipfile_lock
            or self.has_setup
            or (self.pyproject and self.pyproject.is_uv_workspace)
        )

    def path(self, name: str) -> str:
        return join(self.directory, name)


def read_project(tree: SourceTree, directory: str) -> ProjectFiles:
    """The project files of ``directory``, read once per tree."""
    cache = tree.memo.setdefault("projects", {})
    assert isinstance(cache, dict)
    if directory not in cache:
        cache[directory] = _read_project(tree, directory)
    found = cache[directory]
    assert isinstance(found, ProjectFiles)
    return found


def _read_project(tree: SourceTree, directory: str) -> ProjectFiles:
    warnings: list[str] = []
    requirements = parse_requirements(tree, join(directory, "requirements.txt"))
    if requirements is not None:
        warnings.extend(requirements.warnings)
    other_locks = [
        join(directory, name)
        for name in ("pdm.lock", "pylock.toml")
        if tree.is_file(join(directory, name))
    ]
    return ProjectFiles(
        directory=directory,
        pyproject=read_pyproject(tree, directory, warnings),
        requirements=requirements,
        uv_lock=read_uv_lock(tree, directory, warnings),
        poetry_lock=read_poetry_lock(tree, directory, warnings),
        pipfile=read_pipfile(tree, directory, warnings),
        pipfile_lock=read_pipfile_lock(tree, directory, warnings),
        other_locks=other_locks,
        has_setup=tree.is_file(join(directory, "setup.py"))
        or tree.is_file(join(directory, "setup.cfg")),
        has_manage_py=tree.is_file(join(directory, "manage.py")),
        setup_dependencies=read_setup(tree, directory),
        warnings=warnings,
    )
