"""Which package manager installs the project: uv, poetry or pip.

A lockfile wins (``uv.lock`` → uv, ``poetry.lock`` → poetry, ``Pipfile.lock`` → pipenv); a
lockfile beside a ``requirements.txt`` → the lockfile, with a warning; uv.lock and poetry.lock
together → an error unless the project setting chooses; ``[tool.poetry]`` without a lock →
poetry; otherwise a ``requirements.txt`` or a ``[project]`` table → pip; a lone ``Pipfile`` →
pipenv (its packages, resolved afresh).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect.project import ProjectFiles
from phemeral.errors import DetectionError

MANAGERS = ("uv", "poetry", "pipenv", "pip")


@dataclass
class ManagerDecision:
    name: str
    source: str
    warnings: list[str] = field(default_factory=list)


def decide_package_manager(
    project: ProjectFiles, override: str | None, workspace_lock: str | None = None
) -> ManagerDecision:
    """``workspace_lock`` is a parent directory's ``uv.lock`` this project is a member of."""
    warnings: list[str] = []
    uv_lock = project.uv_lock.path if project.uv_lock else workspace_lock
    poetry_lock = project.poetry_lock.path if project.poetry_lock else None
    requirements = project.requirements.path if project.requirements else None
    pyproject = project.pyproject

    if override:
        name = override.strip().lower()
        if name not in MANAGERS:
            raise DetectionError(
                f"The project setting package_manager is {override!r}; it must be one of "
                f"{', '.join(MANAGERS)}. Change the setting."
            )
        needs = {
            "uv": uv_lock or pyproject,
            "poetry": poetry_lock or pyproject,
            "pipenv": project.pipfile_lock or project.pipfile,
        }
        if name in needs and not needs[name]:
            raise DetectionError(
                f"The project setting package_manager is {name}, but {project.path('')} has no "
                f"pyproject.toml or lockfile for it. Add one, or clear the setting."
            )
        if name == "pip" and not (requirements or (pyproject and pyproject.has_project)):
            raise DetectionError(
                "The project setting package_manager is pip, but there is no requirements.txt "
                "or [project] table to install from. Add one, or clear the setting."
            )
        return ManagerDecision(name, "project setting", warnings)

    if uv_lock and poetry_lock:
        raise DetectionError(
            f"Found two lockfiles, {uv_lock} and {poetry_lock}, so the package manager is "
            "ambiguous. Delete the one you no longer use, or set the project's package_manager "
            "to uv or poetry."
        )
    pipfile_lock = project.pipfile_lock.path if project.pipfile_lock else None
    if pipfile_lock and not (uv_lock or poetry_lock):
        if requirements:
            warnings.append(
                f"{requirements} is ignored: {pipfile_lock} wins and its pinned, hashed set is "
                f"installed; delete {requirements} or set package_manager to pip to use it"
            )
        return ManagerDecision("pipenv", pipfile_lock, warnings)
    lock = uv_lock or poetry_lock
    if lock:
        name = "uv" if lock == uv_lock else "poetry"
        if requirements:
            exported = project.requirements.exported_by if project.requirements else None
            how = f" (exported by {exported})" if exported else ""
            warnings.append(
                f"{requirements}{how} is ignored: {lock} wins and {name} installs from it; "
                f"delete {requirements} or set package_manager to pip to use it"
            )
        if name == "uv" and pyproject is None and workspace_lock is None:
            raise DetectionError(
                f"Found {uv_lock} but no pyproject.toml beside it; uv cannot install a lock "
                "without its project. Commit pyproject.toml, or delete uv.lock."
            )
        if name == "poetry" and not (pyproject and pyproject.is_manifest):
            raise DetectionError(
                f"Found {poetry_lock} but no pyproject.toml with [tool.poetry] or [project]; "
                "Poetry cannot install it. Commit pyproject.toml, or delete poetry.lock."
            )
        return ManagerDecision(name, lock, warnings)
    if project.other_locks:
        warnings.append(
            f"{', '.join(project.other_locks)} is not used (only uv, poetry and pip are "
            "supported); dependencies are installed from the manifest instead"
        )
    if pyproject and pyproject.has_poetry:
        warnings.append(
            f"{pyproject.path} uses Poetry but poetry.lock is missing; the build will resolve "
            "versions afresh. Commit poetry.lock for reproducible builds"
        )
        if requirements:
            warnings.append(
                f"{requirements} is ignored: {pyproject.path} has [tool.poetry], so Poetry "
                "installs the project; set package_manager to pip to use it instead"
            )
        return ManagerDecision("poetry", pyproject.path, warnings)
    if requirements:
        return ManagerDecision("pip", requirements, warnings)
    if pyproject and pyproject.has_project:
        warnings.append(
            f"{pyproject.path} has no lockfile; pip installs the project and resolves versions "
            "afresh. Commit uv.lock (`uv lock`) for reproducible builds"
        )
        return ManagerDecision("pip", pyproject.path, warnings)
    if project.has_setup:
        warnings.append("only setup.py/setup.cfg found; pip installs the project with them")
        return ManagerDecision("pip", project.path("setup.py"), warnings)
    if project.pipfile:
        warnings.append(
            f"{project.pipfile.path} has no Pipfile.lock; its [packages] are installed with "
            "versions resolved afresh. Commit Pipfile.lock (`pipenv lock`) for reproducible builds"
        )
        return ManagerDecision("pipenv", project.pipfile.path, warnings)
    raise DetectionError(
        f"No dependency file in {project.path('') or 'the project root'}. Looked for uv.lock, "
        "poetry.lock, requirements.txt, or pyproject.toml with [project] or [tool.poetry]. "
        "Add a requirements.txt listing your framework (e.g. `fastapi` and `uvicorn`)."
    )
