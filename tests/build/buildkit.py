"""Helpers for build tests: a real log collector, jobs built from fixture folders."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from phemeral.build.archive import pack
from phemeral.models import ArchiveSource, BuildJob, ProjectOverrides
from phemeral.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "build"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APP_UID = 20_101


@dataclass
class ListLog:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def write(self, stage: str, message: str) -> None:
        self.lines.append((stage, message))

    def text(self, stage: str | None = None) -> str:
        return "\n".join(m for s, m in self.lines if stage is None or s == stage)

    def stages(self) -> list[str]:
        seen: list[str] = []
        for stage, _ in self.lines:
            if stage not in seen:
                seen.append(stage)
        return seen


def make_job(
    project_dir: Path,
    work: Path,
    settings: Settings,
    *,
    project: str = "demo",
    overrides: ProjectOverrides | None = None,
    custom: str | None = None,
    env: dict[str, str] | None = None,
) -> BuildJob:
    """Pack ``project_dir`` as `phemeral deploy` would and describe the build of it."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "checkout"
    shutil.copytree(project_dir, src, symlinks=True)
    archive = work / "upload.tar.gz"
    pack(src, archive)
    deployment_id = f"{project}-{uuid.uuid4().hex[:8]}"
    return BuildJob(
        deployment_id=deployment_id,
        project=project,
        environment="production",
        source=ArchiveSource(archive),
        overrides=overrides or ProjectOverrides(),
        custom_start_command=custom,
        env=env or {},
        release_dir=settings.data_dir / "apps" / project / "releases" / deployment_id,
        uid=APP_UID if os.geteuid() == 0 else None,
    )
