"""Dashboard page latency on a big project: deployments list, deployment page, runtime logs.

    .venv/bin/python bench/dashboard.py [--deployments 10000] [--build-lines 5000]
                                        [--runtime-lines 20000]

Starts a real `phemeral serve` (SQLite in a temporary data dir), inserts the deployments and
log lines straight into its database, signs in through the login form like a browser, then
times: every page of the deployments list (50 per page, following the "Older" links), the
deployment page of one deployment with a long build log, and its runtime logs paged back 20
times. Prints first/last/median/p95 per page kind. Target: list pages flat (keyset cursors),
every page under 250 ms on the shared 2-core box.
"""

from __future__ import annotations

import argparse
import html
import os
import re
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
from phemeral.store.schema import BuildLogRow, Deployment, Environment, Project, RuntimeLogRow

OLDER = re.compile(r'href="\?([^"]+)"[^>]*rel="next"')


def report(kind: str, timings: list[float]) -> None:
    ordered = sorted(timings)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(
        f"{kind:<22} n={len(timings):<4} first {timings[0]:6.1f} ms  last {timings[-1]:6.1f} ms"
        f"  median {statistics.median(timings):6.1f} ms  p95 {p95:6.1f} ms"
    )


def timed_get(client: httpx.Client, url: str) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - t) * 1000
    response.raise_for_status()
    return elapsed, response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--build-lines", type=int, default=5_000)
    parser.add_argument("--runtime-lines", type=int, default=20_000)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="phemeral-bench-dashboard-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", str(port)]
    env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = (data_dir / "admin-token").read_text().strip()
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        project = f"bench-{os.getpid()}"
        api.post("/api/projects", json={"name": project}).raise_for_status()

        store = Store.connect(f"sqlite:///{data_dir / 'phemeral.db'}")
        started = time.perf_counter()
        t0 = datetime.now(UTC) - timedelta(days=30)
        with store.write() as s:
            proj = s.scalars(select(Project).where(Project.name == project)).one()
            envr = s.scalars(select(Environment).where(Environment.project_id == proj.id)).one()
            ids = [new_deployment_id() for _ in range(args.deployments)]
            s.execute(
                insert(Deployment),
                [
                    {
                        "id": ids[n],
                        "project_id": proj.id,
                        "environment_id": envr.id,
                        "status": ("successful", "failed")[n % 7 == 0],
                        "trigger": "push",
                        "commit_sha": f"{n:040x}",
                        "branch": "main",
                        "pusher": "bench",
                        "created_by": "bench",
                        "promote_on_success": True,
                        "env_snapshot": "",
                        "created_at": t0 + timedelta(seconds=n * 60),
                        "finished_at": t0 + timedelta(seconds=n * 60 + 42),
                    }
                    for n in range(args.deployments)
                ],
            )
            target = ids[-1]
            stages = ("source", "detect", "python", "install", "verify", "release")
            s.execute(
                insert(BuildLogRow),
                [
                    {
                        "deployment_id": target,
                        "stage": stages[n * len(stages) // args.build_lines],
                        "timestamp": t0 + timedelta(milliseconds=n),
                        "message": f"build line {n} " + "x" * 60,
                    }
                    for n in range(args.build_lines)
                ],
            )
            s.execute(
                insert(RuntimeLogRow),
                [
                    {
                        "deployment_id": target,
                        "instance": "web-1",
                        "stream": ("stdout", "stderr", "router")[n % 3],
                        "timestamp": t0 + timedelta(milliseconds=n),
                        "message": f"GET /item/{n} 200 512B 1.2ms",
                    }
                    for n in range(args.runtime_lines)
                ],
            )
        store.close()
        print(
            f"inserted {args.deployments} deployments, {args.build_lines} build and "
            f"{args.runtime_lines} runtime lines in {time.perf_counter() - started:.1f} s"
        )

        browser = httpx.Client(base_url=base, timeout=60)
        form = browser.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf
        signed = browser.post("/login", data={"token": token, "csrf_token": csrf[1]})
        assert signed.status_code == 303, signed.text

        browser.get(f"/projects/{project}/deployments")  # warm
        url = f"/projects/{project}/deployments?limit=50"
        pages: list[float] = []
        seen = 0
        while True:
            elapsed, response = timed_get(browser, url)
            pages.append(elapsed)
            seen += response.text.count('<td data-label="Deployment">')
            older = OLDER.search(response.text)
            if older is None:
                break
            url = f"/projects/{project}/deployments?" + html.unescape(older[1])
        assert seen == args.deployments, seen
        report("deployments list page", pages)

        detail = [timed_get(browser, f"/deployments/{target}")[0] for _ in range(10)]
        size = len(browser.get(f"/deployments/{target}").content)
        report("deployment page", detail)
        print(
            f"{'':<22} ({args.build_lines} build lines, 100 runtime lines, {size / 1024:.0f} KiB)"
        )

        url = f"/deployments/{target}"
        runtime: list[float] = []
        for _ in range(20):
            elapsed, response = timed_get(browser, url)
            runtime.append(elapsed)
            older = OLDER.search(response.text)
            if older is None:
                break
            url = f"/deployments/{target}?" + html.unescape(older[1])
        report("runtime log pages", runtime)
        timed = [timed_get(browser, f"/projects/{project}")[0] for _ in range(10)]
        report("project page", timed)
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
