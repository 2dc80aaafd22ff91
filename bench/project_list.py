"""The first page of ``GET /api/projects`` at 10, 100 and 1,000 projects: is it flat?

    .venv/bin/python bench/project_list.py [--counts 10,100,1000] [--runs 200] [--limit 50]

Starts a real `phemeral serve` (SQLite in a temporary data dir), inserts the projects straight
into its database (each with a `production` environment and its default domain, as the API
creates them, without the API's per-project work), then times ``--runs`` requests for the
first page of ``--limit`` (what the dashboard's projects page asks) at each count and prints
p50 / p99. Target: the same figure at 100 and 1,000 (a page costs a fixed number of queries).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phemeral.store import Store  # noqa: E402
from phemeral.store.schema import Domain, Environment, Project  # noqa: E402
from tests.platformkit import Platform  # noqa: E402


def add_projects(store: Store, start: int, stop: int) -> None:
    with store.write() as s:
        now = datetime.now(UTC)
        for i in range(start, stop):
            name = f"list{i:05d}"
            project = Project(name=name, uid=60_000 + i, created_at=now)
            s.add(project)
            s.flush()
            env = Environment(
                project_id=project.id, name="production", branches=["main"], created_at=now
            )
            s.add(env)
            s.flush()
            s.add(Domain(label=f"{name}-production", environment_id=env.id, is_default=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    platform = Platform(Path(tempfile.mkdtemp(prefix="phemeral-bench-")) / "data").start()
    store = Store.connect(f"sqlite:///{platform.data_dir / 'phemeral.db'}")
    try:
        with platform.client() as api:
            have = 0
            for count in counts:
                add_projects(store, have, count)
                have = count
                params = {"limit": args.limit}
                for _ in range(5):  # warm
                    api.get("/projects", params=params).raise_for_status()
                timings = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    response = api.get("/projects", params=params)
                    timings.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                items = len(response.json()["items"])
                ordered = sorted(timings)
                print(
                    f"{count:6d} projects: first page ({items} items) "
                    f"p50 {statistics.median(timings):6.1f} ms  "
                    f"p99 {ordered[max(0, int(len(ordered) * 0.99) - 1)]:6.1f} ms  "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        store.close()
        platform.stop()


if __name__ == "__main__":
    main()
