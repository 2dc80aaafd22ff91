"""Detection latency on a typical repository: prints p50/p99 in milliseconds (target < 50 ms).

The repository is generated in a temporary folder: a FastAPI service in an ``app/`` package
(60 modules), 40 test files, a docs folder, a 400 KB ``uv.lock`` (Phemeral's own, with its
production closure), a ``.git`` folder and ``node_modules`` with thousands of files (skipped).

    .venv/bin/python bench/detect.py [--runs 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from phemeral.detect import detect

HERE = Path(__file__).resolve().parent.parent


def make_repository(root: Path) -> None:
    (root / ".python-version").write_text("3.12\n")
    (root / "pyproject.toml").write_text((HERE / "pyproject.toml").read_text())
    shutil.copy(HERE / "uv.lock", root / "uv.lock")
    app = root / "app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "main.py").write_text(
        "from fastapi import FastAPI\n\nfrom app.routers import r0\n\n"
        "app = FastAPI(title='bench')\napp.include_router(r0.router)\n"
    )
    routers = app / "routers"
    routers.mkdir()
    (routers / "__init__.py").write_text("")
    for i in range(60):
        (routers / f"r{i}.py").write_text(
            "from fastapi import APIRouter\n\nrouter = APIRouter()\n\n"
            + "".join(
                f"@router.get('/r{i}/{j}')\ndef h{j}() -> int:\n    return {j}\n\n"
                for j in range(20)
            )
        )
    tests = root / "tests"
    tests.mkdir()
    for i in range(40):
        (tests / f"test_{i}.py").write_text("from app.main import app\n\ndef test(): assert app\n")
    docs = root / "docs"
    docs.mkdir()
    for i in range(20):
        (docs / f"page{i}.md").write_text("# page\n" * 50)
    for folder, count in ((".git/objects", 3000), ("node_modules/pkg", 3000)):
        target = root / folder
        target.mkdir(parents=True)
        for i in range(count):
            (target / f"f{i}").write_text("x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_repository(root)
        result = detect(root)
        assert result.entrypoint == "app.main:app", result
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            detect(root)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    print(
        f"detect: typical repository, {args.runs} runs: p50 {_p(wall, 50):.1f} ms, "
        f"p99 {_p(wall, 99):.1f} ms (CPU time p50 {_p(cpu, 50):.1f} ms, p99 {_p(cpu, 99):.1f} ms)"
    )


def _p(values: list[float], percentile: int) -> float:
    ordered = sorted(values)
    if percentile == 50:
        return statistics.median(ordered)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percentile / 100))]


if __name__ == "__main__":
    main()
