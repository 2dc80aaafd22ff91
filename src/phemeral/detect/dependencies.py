"""The production dependency set of a project, as PEP 503 names with their sources.

Direct dependencies come from what the chosen package manager installs (``[project]`` and
Poetry tables for uv/poetry, ``requirements.txt`` with its includes for pip); the *resolved* set
is the lockfile's production closure when there is one (it sees ``fastapi[standard]`` pulling
in uvicorn), else the direct names plus the servers well-known extras bring.
"""

from __future__ import annotations

from dataclasses import dataclass

from phemeral.detect.manifests import Lockfile
from phemeral.detect.project import ProjectFiles
from phemeral.detect.requirements import Dependency

# Extras that bring a server with them, for projects without a lockfile.
IMPLIED_BY_EXTRA = {
    ("fastapi", "standard"): ("uvicorn", "fastapi-cli"),
    ("fastapi", "standard-no-fastapi-cloud-cli"): ("uvicorn", "fastapi-cli"),
    ("fastapi", "all"): ("uvicorn",),
}
IMPLIED = {"channels": ("daphne",)}


@dataclass(frozen=True)
class Dependencies:
    direct: dict[str, str]  # name → "file:line" of its first mention
    resolved: frozenset[str]
    files: tuple[str, ...]  # every file the set was read from

    def has(self, name: str) -> bool:
        return name in self.resolved or name in self.direct


def collect_dependencies(
    project: ProjectFiles, manager: str, workspace_lock: Lockfile | None = None
) -> Dependencies:
    deps: list[Dependency] = []
    files: list[str] = []
    pyproject = project.pyproject
    lock: Lockfile | None = None
    if manager == "pip" and project.requirements:
        deps.extend(project.requirements.dependencies)
        files.extend(project.requirements.included)
    elif manager == "pipenv" and project.pipfile:
        deps.extend(project.pipfile.dependencies)
        files.append(project.pipfile.path)
    elif pyproject is not None and pyproject.is_manifest:
        deps.extend(pyproject.dependencies)
        files.append(pyproject.path)
    elif project.setup_dependencies:
        deps.extend(project.setup_dependencies)
        files.append(project.setup_dependencies[0].source.rsplit(":", 1)[0])
    if manager == "uv":
        lock = project.uv_lock or workspace_lock
    elif manager == "poetry":
        lock = project.poetry_lock
    elif manager == "pipenv":
        lock = project.pipfile_lock
    direct: dict[str, str] = {}
    resolved: set[str] = set()
    for dep in deps:
        direct.setdefault(dep.name, dep.source)
        resolved.add(dep.name)
        if dep.name.startswith("flask-"):  # every Flask extension installs Flask itself
            resolved.add("flask")
        resolved.update(IMPLIED.get(dep.name, ()))
        for extra in dep.extras:
            resolved.update(IMPLIED_BY_EXTRA.get((dep.name, extra), ()))
    if lock is not None and lock.packages:
        resolved |= lock.packages
        files.append(lock.path)
    return Dependencies(direct=direct, resolved=frozenset(resolved), files=tuple(files))
