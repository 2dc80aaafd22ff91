"""Backing services: time to create a PostgreSQL and a Redis service through the API of a real
`phemeral serve` (embedded cluster), and the memory an idle Redis service costs.

    .venv/bin/python bench/services.py [--count 5]

Prints per-creation wall times (the first PostgreSQL service also initialises the cluster),
then RSS / PSS / USS of each idle redis-server (USS = pages only that process has: what one
more service costs; PSS shares the common library pages out), and the cluster's own memory.
Goals: < 2 s per creation, < 5 MB per idle Redis service.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of one process, from smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5, help="services of each kind")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="phemeral-bench-services-"))
    root.chmod(0o711)
    data = root / "data"
    port = free_port()
    log = (root / "server.log").open("wb")
    env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = (data / "admin-token").read_text().strip()
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        print(f"load average before: {os.getloadavg()}")
        times: dict[str, list[float]] = {"postgres": [], "redis": []}
        names = []
        for i in range(args.count):
            project = f"bench-{i}-{secrets.token_hex(2)}"
            api.post("/projects", json={"name": project}).raise_for_status()
            for kind in ("postgres", "redis"):
                start = time.perf_counter()
                response = api.post("/services", json={"kind": kind, "project": project})
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                times[kind].append(elapsed)
                names.append(response.json()["name"])
        first, *rest = times["postgres"]
        print(f"create postgres: first (initdb + start of the cluster) {first * 1000:.0f} ms")
        if rest:
            print(
                f"create postgres: next {len(rest)}: median "
                f"{statistics.median(rest) * 1000:.0f} ms, max {max(rest) * 1000:.0f} ms"
            )
        r = times["redis"]
        print(
            f"create redis: {len(r)}: median {statistics.median(r) * 1000:.0f} ms, "
            f"max {max(r) * 1000:.0f} ms"
        )
        time.sleep(3)  # idle
        per = []
        for pidfile in sorted((data / "services" / "redis").glob("*/redis.pid")):
            per.append(memory_kb(int(pidfile.read_text().strip())))
        for key in ("rss", "pss", "uss"):
            values = [m[key] for m in per]
            print(
                f"idle redis {key.upper()}: median {statistics.median(values) / 1024:.1f} MB "
                f"(min {min(values) / 1024:.1f}, max {max(values) / 1024:.1f}; "
                f"{len(values)} servers)"
            )
        postmaster = int((data / "services/postgres/data/postmaster.pid").read_text().split()[0])
        cluster = [memory_kb(p) for p in [postmaster, *children_of(postmaster)]]
        print(
            f"embedded PostgreSQL cluster ({len(cluster)} processes, {args.count} databases): "
            f"PSS {sum(m['pss'] for m in cluster) / 1024:.1f} MB, "
            f"USS {sum(m['uss'] for m in cluster) / 1024:.1f} MB"
        )
        print(f"load average after: {os.getloadavg()}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
