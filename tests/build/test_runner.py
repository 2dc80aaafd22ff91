"""One sandboxed build command: output capped in the log, memory limit reported as such."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from buildkit import APP_UID, ListLog, make_job

from phemeral import sandbox
from phemeral.build.pipeline import build
from phemeral.build.runner import BuildContext, run
from phemeral.errors import BuildError
from phemeral.sandbox import Cgroup
from phemeral.settings import Settings


def _ctx(log: ListLog, **kw: object) -> BuildContext:
    return BuildContext(
        log=log,
        uid=APP_UID if os.geteuid() == 0 else None,
        deadline=time.monotonic() + 60,
        timeout=60,
        use_bwrap=sandbox.available(),
        **kw,  # type: ignore[arg-type]
    )


def test_output_flood_is_truncated_with_a_marker(tmp_path: Path) -> None:
    log = ListLog()
    ctx = _ctx(log, log_cap=20_000)
    flood = "for i in range(20000): print('x' * 100)"
    result = asyncio.run(run(ctx, "install", ["python3", "-c", flood], chdir=Path("/")))
    assert result.ok
    text = log.text("install")
    assert "build output truncated" in text
    assert len(text) < 25_000
    assert len(result.output) <= 200  # the kept tail is bounded too


@pytest.mark.root
def test_memory_limit_is_reported_as_out_of_memory(tmp_path: Path, settings: Settings) -> None:
    if not Cgroup.supported():
        pytest.skip("cgroups not writable")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "hog"\nversion = "0"\ndependencies = ["fastapi"]\n'
        '[build-system]\nrequires = []\nbuild-backend = "hog_backend"\nbackend-path = ["."]\n'
    )
    (project / "hog_backend.py").write_text(
        "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n"
    )
    (project / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    small = replace(settings, build_memory_mb=150)
    job = make_job(project, tmp_path / "work", small, project=f"hog{uuid.uuid4().hex[:4]}")
    with pytest.raises(BuildError, match=r"ran out of memory \(limit 150 MiB\)") as caught:
        asyncio.run(build(job, ListLog(), small))
    assert caught.value.stage == "install"
