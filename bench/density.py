"""Many projects scaled to zero on one box: memory at zero, platform RSS, wake at every tier.

    .venv/bin/python bench/density.py [--projects 10] [--rounds 3] [--idle-timeout 1]
        [--data-dir DIR] [--keep]

Starts a real `phemeral serve` (SQLite, a fresh data dir unless ``--data-dir`` names one that
already holds the projects), deploys ``--projects`` hello-world FastAPI projects
(`examples/fastapi-uv`, each its own project: its own uid, sandbox and templates) over the API,
lets them scale to zero (``--idle-timeout`` s), then prints:

- **memory per project at zero**: PSS (``/proc/PID/smaps_rollup``) summed over every process
  `phemeral serve` keeps besides itself, its router workers and the control plane (the shared
  framework templates, the per-deployment templates, their sandboxes), divided by the number
  of projects; and the same as USS-free RSS for comparison;
- **control-plane and data-plane RSS** (the control-plane child's tree; the serve process);
- **wake → first byte** through the router (``GET /`` with the deployment's host), p50 / p99:
  1. right after deploy (template tier; ``--rounds`` wakes per project, each after it scaled
     to zero again);
  2. after a platform restart (SIGINT, start again), once the background warming settled
     (every deployment on the template tier, or 180 s, then ``--settle`` s): one wake per
     project;
  3. after forcing the deep tier: a restart with ``PHEMERAL_WARM_BUDGET_MB=0`` (nothing is
     warmed, nothing resident): one wake per project.

The issue's full run is ``--projects 1000``; the default is a quick mode for a 2-core box.
Wakes are sequential (one at a time); the machine's load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.platformkit import Platform, upload, wait_done  # noqa: E402

EXAMPLE = ROOT / "examples" / "fastapi-uv"
BASE = "phemeral.localhost"


def example_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in EXAMPLE.iterdir() if p.is_file()}


# -- /proc ------------------------------------------------------------------------------------


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def subtree(pid: int, tree: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def rollup_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory(serve_pid: int) -> dict[str, int]:
    """kB: apps' PSS (and process count), control plane RSS, data plane (+ routers) RSS."""
    tree = children_of()
    control: list[int] = []
    routers: list[int] = []
    for child in tree.get(serve_pid, []):
        line = cmdline(child)
        if "phemeral.dataplane.child control" in line:
            control = subtree(child, tree)
        elif "phemeral.dataplane.child router" in line:
            routers.append(child)
    platform = {serve_pid, *control, *routers}
    apps = [p for p in subtree(serve_pid, tree) if p not in platform]
    return {
        "apps_pss": sum(rollup_kb(p, "Pss") for p in apps),
        "apps_rss": sum(rollup_kb(p, "Rss") for p in apps),
        "apps_processes": len(apps),
        "control_rss": sum(rollup_kb(p, "Rss") for p in control),
        "dataplane_rss": rollup_kb(serve_pid, "Rss") + sum(rollup_kb(p, "Rss") for p in routers),
    }


# -- requests ---------------------------------------------------------------------------------


def first_byte_ms(port: int, host: str) -> float:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(request)
        data = conn.recv(65536)
        elapsed = (time.perf_counter() - started) * 1000
        while chunk := conn.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer from {host}: {data[:200]!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def states(platform: Platform, ids: list[str]) -> dict[str, tuple[str, str]]:
    with platform.client() as api:
        out = {}
        for did in ids:
            body: dict[str, Any] = api.get(f"/deployments/{did}").json()
            out[did] = (body["instances"]["state"], body["instances"]["tier"])
        return out


def wait_for(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.5) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            print(f"  ({what}: not reached after {timeout:g} s)", flush=True)
            break
        time.sleep(poll)
    return time.monotonic() - started


def all_dormant(platform: Platform, ids: list[str]) -> bool:
    return all(s == ("dormant", "template") for s in states(platform, ids).values())


def wake_all(platform: Platform, ids: list[str]) -> list[float]:
    return [first_byte_ms(platform.port, f"{did}.{BASE}") for did in ids]


def line(label: str, samples: list[float]) -> str:
    return (
        f"{label:<34} n={len(samples):<4} p50 {statistics.median(samples):7.1f} ms   "
        f"p99 {percentile(samples, 99):7.1f} ms   max {max(samples):7.1f} ms"
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=10, help="1000 for the issue's run")
    parser.add_argument("--rounds", type=int, default=3, help="template-tier wakes per project")
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="s to wait after warming, before waking"
    )
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="phemeral-density-"))
    tmp.chmod(0o755)
    data_dir = args.data_dir or tmp / "data"
    serve_args = ["--idle-timeout", str(args.idle_timeout)]
    platform = Platform(data_dir, args=serve_args)
    results: list[str] = []
    try:
        platform.start(timeout=120)
        print(f"phemeral serve on port {platform.port}, log {platform.log}", flush=True)
        ids = deploy(platform, args.projects)
        wait_for("all scaled to zero", lambda: all_dormant(platform, ids), 300)
        time.sleep(3)  # a first template re-forks once after its shared template learned
        assert platform.proc is not None
        mem = memory(platform.proc.pid)
        n = len(ids)
        results.append(
            f"memory at zero, per project: PSS {mem['apps_pss'] / n / 1024:.1f} MiB "
            f"(RSS {mem['apps_rss'] / n / 1024:.1f} MiB; {mem['apps_processes']} processes, "
            f"total PSS {mem['apps_pss'] / 1024:.0f} MiB for {n} projects)"
        )
        results.append(
            f"control plane RSS {mem['control_rss'] / 1024:.0f} MiB; "
            f"data plane RSS {mem['dataplane_rss'] / 1024:.0f} MiB"
        )

        samples: list[float] = []
        for _ in range(args.rounds):
            samples += wake_all(platform, ids)
            wait_for("scaled to zero", lambda: all_dormant(platform, ids), 120)
        results.append(line("after deploy (template tier)", samples))
        if args.rounds > 1:  # the first fork of a template vs the later ones
            results.append(line("  of which round 1", samples[: len(ids)]))
            results.append(line("  of which rounds 2+", samples[len(ids) :]))

        platform.stop()
        started = time.monotonic()
        platform.start(timeout=120)
        settle = wait_for("warming settled", lambda: all_dormant(platform, ids), 180)
        warmed = sum(s == ("dormant", "template") for s in states(platform, ids).values())
        time.sleep(args.settle)  # a warmed template is re-forked once its shared one learned
        mem = memory(platform.proc.pid)
        results.append(
            f"after restart: {warmed}/{n} warmed {settle:.0f} s after the API answered "
            f"({time.monotonic() - started:.0f} s after the restart); "
            f"PSS per project {mem['apps_pss'] / n / 1024:.1f} MiB"
        )
        results.append(line("after a platform restart (warmed)", wake_all(platform, ids)))

        platform.stop()
        deep = Platform(data_dir, args=serve_args, env={"PHEMERAL_WARM_BUDGET_MB": "0"})
        deep.port = platform.port
        platform = deep
        platform.start(timeout=120)
        tiers = states(platform, ids)
        if any(t != ("stopped", "none") for t in tiers.values()):
            print(f"  (not all on the deep tier: {tiers})")
        results.append(line("deep tier (restart, no warming)", wake_all(platform, ids)))
    finally:
        platform.stop()
        print(
            f"\n{args.projects} hello-world FastAPI projects, "
            f"{os.cpu_count()} CPUs, load average {load()} (1/5/15 min), "
            f"{'root, sandboxed' if os.geteuid() == 0 else 'not root'}"
        )
        for result in results:
            print(result)
        if args.keep or args.data_dir:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def deploy(platform: Platform, count: int) -> list[str]:
    """``count`` projects d0…, one deployment each (reused when the data dir holds them)."""
    files = example_files()
    ids: list[str] = []
    started = time.monotonic()
    with platform.client() as api:
        existing = {p["name"] for p in api.get("/projects").json()["items"]}
        pending = []
        for index in range(count):
            name = f"d{index}"
            if name in existing:
                listing = api.get(f"/projects/{name}/deployments").json()["items"]
                ok = [d for d in listing if d["status"] == "successful"]
                if ok:
                    ids.append(ok[0]["id"])
                    continue
            pending.append(upload(api, name, files, create_project="true")["id"])
        for did in pending:
            body = wait_done(api, did, timeout=900)
            if body["status"] != "successful":
                raise SystemExit(f"deployment {did} failed: {body.get('failure_reason')}")
            ids.append(did)
    print(f"{count} projects deployed in {time.monotonic() - started:.0f} s", flush=True)
    return ids


if __name__ == "__main__":
    main()
