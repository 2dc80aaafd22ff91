"""Listing 10,000 deployments through the API, page by page: is the latency per page flat?

    .venv/bin/python bench/api_list.py [--count 10000] [--limit 50] [--database-url URL]

Starts a real `phemeral serve` (SQLite in a temporary data dir unless --database-url), inserts
the deployments straight into its database, then walks every page with the cursor and prints
the latency of the first and last pages, the median and p95. Target: last page ≈ first page
(keyset pagination; an OFFSET scan would grow linearly).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from phemeral.store import Store
from phemeral.store.names import new_deployment_id
from phemeral.store.schema import Deployment, Environment, Project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="phemeral-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = (data_dir / "admin-token").read_text().strip()
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        project = f"bench-{os.getpid()}"
        client.post("/projects", json={"name": project}).raise_for_status()

        store = Store.connect(args.database_url or f"sqlite:///{data_dir / 'phemeral.db'}")
        started = time.perf_counter()
        with store.write() as s:
            proj = s.scalars(select(Project).where(Project.name == project)).one()
            envr = s.scalars(select(Environment).where(Environment.project_id == proj.id)).one()
            t0 = datetime.now(UTC) - timedelta(days=30)
            s.execute(
                insert(Deployment),
                [
                    {
                        "id": new_deployment_id(),
                        "project_id": proj.id,
                        "environment_id": envr.id,
                        "status": "successful",
                        "trigger": "push",
                        "commit_sha": f"{n:040x}",
                        "branch": "main",
                        "created_by": "bench",
                        "promote_on_success": True,
                        "env_snapshot": "",
                        "created_at": t0 + timedelta(seconds=n * 60),
                    }
                    for n in range(args.count)
                ],
            )
        store.close()
        print(f"inserted {args.count} deployments in {time.perf_counter() - started:.1f} s")

        client.get(f"/projects/{project}/deployments", params={"limit": args.limit})  # warm
        timings: list[float] = []
        cursor = None
        total = 0
        while True:
            t = time.perf_counter()
            response = client.get(
                f"/projects/{project}/deployments", params={"limit": args.limit, "cursor": cursor}
            )
            timings.append((time.perf_counter() - t) * 1000)
            response.raise_for_status()
            page = response.json()
            total += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert total == args.count, total
        ordered = sorted(timings)
        backend = "postgresql" if args.database_url else "sqlite"
        print(f"backend {backend}: {len(timings)} pages of {args.limit}, {total} deployments")
        print(f"first page   {timings[0]:7.1f} ms")
        print(f"last page    {timings[-1]:7.1f} ms")
        print(f"first 10 avg {statistics.mean(timings[:10]):7.1f} ms")
        print(f"last 10 avg  {statistics.mean(timings[-10:]):7.1f} ms")
        print(f"median       {statistics.median(timings):7.1f} ms")
        print(f"p95          {ordered[int(len(ordered) * 0.95) - 1]:7.1f} ms")
        ratio = statistics.mean(timings[-10:]) / statistics.mean(timings[:10])
        print(f"last/first   {ratio:7.2f}x  (flat ≈ 1.0)")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
