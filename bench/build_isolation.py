"""What build isolation costs: the disk quota (loop-mounted ext4 per build) and the cache that no
build can write (prefetch with --no-build, then the install against an overlay).

    .venv/bin/python bench/build_isolation.py [--example fastapi-uv] [--rounds 3]

Builds ``examples/<example>`` as root, in a fresh data dir per variant: a cold build, then
``--rounds`` warm rebuilds (same lock), with the quota (4096 MB) and without it (0). Prints each
build's wall time, the quota's own steps (image made + mounted, release copied off) and the
prefetch. Also times the workspace alone (create / copy / remove) for a release of the size built.
Needs root (loop mounts, overlays, app uids).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "build"))

from buildkit import ListLog, make_job  # noqa: E402

from phemeral.build import workspace  # noqa: E402
from phemeral.build.pipeline import build  # noqa: E402
from phemeral.settings import load_settings  # noqa: E402


def seconds(log: ListLog, pattern: str) -> float | None:
    for _, line in log.lines:
        found = re.search(pattern, line)
        if found:
            return float(found.group(1))
    return None


def run_variant(example: Path, disk_mb: int, rounds: int) -> list[dict[str, float | None]]:
    data = Path(tempfile.mkdtemp(prefix="phemeral-bench-iso-"))
    settings = load_settings({}, {"data_dir": data, "build_timeout": 600})
    settings = dataclasses.replace(settings, build_disk_mb=disk_mb)
    out = []
    try:
        for n in range(rounds + 1):
            job = make_job(example, data / f"work{n}", settings, project="bench")
            log = ListLog()
            started = time.monotonic()
            asyncio.run(build(job, log, settings))
            out.append(
                {
                    "wall": time.monotonic() - started,
                    "copy": seconds(log, r"release copied off the build's disk .* in ([\d.]+) s"),
                    "prefetch": seconds(log, r"prefetch: pinned wheels in place \(([\d.]+) s\)"),
                    "install": seconds(log, r"dependencies installed \(([\d.]+) s\)"),
                }
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return out


def workspace_alone(release_mb: int, rounds: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="phemeral-bench-ws-"))
    times: dict[str, list[float]] = {"create": [], "copy": [], "remove": []}
    try:
        for n in range(rounds):
            release = data / "apps" / "p" / "releases" / f"r{n}"
            release.mkdir(parents=True)
            t = time.monotonic()
            ws = workspace.create(data, f"r{n}", release, 4096)
            times["create"].append(time.monotonic() - t)
            for i in range(release_mb):
                (ws.release / f"f{i}").write_bytes(os.urandom(1 << 20))
            t = time.monotonic()
            workspace.keep_release(ws)
            times["copy"].append(time.monotonic() - t)
            t = time.monotonic()
            workspace.remove(ws)
            times["remove"].append(time.monotonic() - t)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="fastapi-uv")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (loop mounts, overlays, app uids)")
    example = ROOT / "examples" / args.example
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores shared)")
    for disk_mb in (0, 4096):
        results = run_variant(example, disk_mb, args.rounds)
        cold, warm = results[0], results[1:]
        label = f"quota {disk_mb} MB" if disk_mb else "no quota"
        print(f"{label}: cold build {cold['wall']:.2f} s (prefetch {cold['prefetch']} s)")
        walls = ", ".join(f"{r['wall']:.2f}" for r in warm)
        prefetch = ", ".join(str(r["prefetch"]) for r in warm)
        copies = ", ".join(str(r["copy"]) for r in warm)
        median = statistics.median(float(r["wall"] or 0) for r in warm)
        print(
            f"{label}: warm rebuild median {median:.2f} s (each: {walls}; prefetch {prefetch} s;"
            f" release copy {copies} s)"
        )
    alone = workspace_alone(100, args.rounds)
    print(
        "workspace alone, 100 MB release: create (truncate + mkfs.ext4 + mount + bind) "
        f"{alone['create'] * 1000:.0f} ms, copy off {alone['copy'] * 1000:.0f} ms, "
        f"remove {alone['remove'] * 1000:.0f} ms (medians)"
    )


if __name__ == "__main__":
    main()
