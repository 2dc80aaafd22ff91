"""Which directory of the repository is the project: the setting, the root, or the only one.

Candidates are directories up to depth 2 holding a manifest or lockfile we can install from,
skipping dependency, documentation, test and example folders. A uv workspace root without its
own ``[project]`` is not itself a candidate: its members are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect.manifests import join
from phemeral.detect.project import read_project
from phemeral.detect.tree import SKIP_DIRS, SourceTree, clean_relpath
from phemeral.errors import DetectionError

NOT_PROJECTS = SKIP_DIRS | {"docs", "doc", "tests", "test", "examples", "example", "scripts"}
MAX_DEPTH = 2
MAX_DIRS_EXAMINED = 500  # folders looked at for candidates; huge trees stop early
MANIFESTS = "requirements.txt, pyproject.toml ([project] or [tool.poetry]), uv.lock, poetry.lock"


@dataclass
class RootDecision:
    directory: str  # "" for the repository root
    source: str
    workspace_root: str | None = None  # set when the project is a member of a uv workspace
    warnings: list[str] = field(default_factory=list)


def _is_workspace_root(tree: SourceTree, directory: str) -> bool:
    project = read_project(tree, directory)
    return bool(
        project.pyproject
        and project.pyproject.is_uv_workspace
        and not project.pyproject.has_project
        and project.uv_lock
    )


def _is_project(tree: SourceTree, directory: str) -> bool:
    return read_project(tree, directory).is_python_project


def _subdirs(tree: SourceTree, directory: str) -> list[str]:
    return [
        join(directory, name)
        for name, is_dir in tree.listdir(directory)
        if is_dir and name not in NOT_PROJECTS and not name.startswith(".")
    ]


def decide_root(tree: SourceTree, override: str | None) -> RootDecision:
    workspace = "" if _is_workspace_root(tree, "") else None
    if override is not None and override.strip() not in ("", ".", "./"):
        directory = clean_relpath(override.strip())
        if directory is None or not tree.is_dir(directory):
            raise DetectionError(
                f"The project setting root_dir is {override!r}, but no such directory exists "
                "inside the repository. Set it to a folder path relative to the repository root."
            )
        if not _is_project(tree, directory):
            raise DetectionError(
                f"The project setting root_dir is {directory!r}, but that folder has none of "
                f"{MANIFESTS}. Point root_dir at the folder that holds them."
            )
        return RootDecision(directory, "project setting", workspace)
    if override is not None or (_is_project(tree, "") and workspace is None):
        return RootDecision("", "project setting" if override is not None else "repository root")
    candidates: list[str] = []
    budget = MAX_DIRS_EXAMINED
    for first in _subdirs(tree, ""):
        budget -= 1
        if budget < 0:
            break
        if _is_project(tree, first):
            candidates.append(first)
            continue
        for second in _subdirs(tree, first)[: max(budget, 0)]:
            budget -= 1
            if _is_project(tree, second):
                candidates.append(second)
    if len(candidates) == 1:
        return RootDecision(
            candidates[0],
            "the only Python project within 2 levels",
            workspace,
            [f"project root is {candidates[0]}/ (the only Python project found)"],
        )
    if not candidates:
        top = [n + ("/" if d else "") for n, d in tree.listdir("")][:20]
        raise DetectionError(
            f"No Python project found. Looked for {MANIFESTS} in the repository root and in "
            f"folders up to {MAX_DEPTH} levels deep; found only: {', '.join(top) or 'nothing'}. "
            "Add a requirements.txt (or pyproject.toml) next to your app, or set root_dir."
        )
    raise DetectionError(
        f"Several Python projects found: {', '.join(c + '/' for c in candidates)}. Set the "
        "project's root_dir to the one to deploy."
    )
