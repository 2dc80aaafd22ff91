"""Many projects scaled to zero on one box: memory at zero, platform RSS, listing, routing and
wake at every tier, at 10 projects and at N.

    .venv/bin/python bench/density.py [--projects 1000] [--rounds 2] [--batch 20]
        [--declared-every 2] [--no-seed] [--idle-timeout 1] [--data-dir DIR] [--keep]

Starts a real `phemeral serve` (SQLite, a fresh data dir unless ``--data-dir`` names one that
already holds the projects) and deploys ``--projects`` hello-world FastAPI projects
(`examples/fastapi-uv`, each its own project: its own uid, sandbox, cache and templates) over
the API. Every ``--declared-every``-th project declares its start command in a Procfile
(``web: uvicorn main:app --host 0.0.0.0 --port $PORT --proxy-headers``) instead of leaving it to
detection, and its wakes are reported apart: declared commands should get the same numbers.

Creating many projects: the first project is a real cold build (it fills its own package
cache: downloads, wheels, the bytecode of the dependency set). Every later project is created
first (``POST /api/projects``, which gives its uid), then its package cache is seeded with a
copy of the first one's (owned by its own uid, the platform's "already prefetched" markers
copied too), then it is deployed: its build is a real build (own uid, own sandbox, own venv
installed by uv from its own cache, import check, boot check), only without the downloads and
the bytecode compile. ``--no-seed`` turns seeding off (each project's first build is cold, as
a brand-new project's is). Deployments go through the API in parallel batches of ``--batch``
(the server builds ``PHEMERAL_BUILD_CONCURRENCY`` at a time, ``--build-concurrency``, default
4); progress and the time per 100 projects are printed.

Measured at 10 projects (right after the first 10 are deployed and scaled to zero) and again
at N, so one run shows whether they stay flat:

- **listing**: ``GET /api/projects?limit=50`` (the first page by name, each project with its
  environments: what the dashboard's projects page asks) and
  ``GET /api/projects/{name}/deployments``, p50 / p99;
- **routing**: a request for an unknown host through the router (its own 404: the route lookup
  without a wake), and a second request to an app right after its wake (the instance running:
  the proxied path), p50 / p99;
- **wake → first byte** through the router (``GET /`` with the deployment's host), ``--rounds``
  wakes per project, each after it scaled to zero again (template tier): autodetected and
  declared commands apart.

At N also:

- **memory per project at zero**: PSS (``/proc/PID/smaps_rollup``) summed over every process
  `phemeral serve` keeps besides itself, its router workers and the control plane (the shared
  framework templates, the per-deployment templates, their sandboxes), divided by the number
  of projects; and RSS for comparison;
- **control-plane and data-plane RSS** (the control-plane child's tree; the serve process);
- **after a platform restart** (SIGINT, start again), once the background warming settled (the
  number of deployments on the template tier unchanged for 45 s, or 300 s; then ``--settle``
  s): one wake per project, the warmed ones and the rest apart (warming stops at
  ``warm_budget_mb``);
- **the longest idle tier while memory and swap last**: every template paged out to swap
  (``--page-out-after``, default 20 s here, 300 s in the platform; the swap file sized for N
  unless the host has swap): memory per project (resident PSS, and what is in swap), then one
  wake per project; then, once paged out again with the hot sets those wakes taught their
  templates read back in (within ``PHEMERAL_HOT_SET_BUDGET_MB``, default a quarter of the
  host's memory), memory and one wake per project again;
- **after forcing the deep tier**: a restart with ``PHEMERAL_WARM_BUDGET_MB=0``, so
  nothing is warmed and nothing is resident: the deep tier. The runtime keeps dormant templates
  at any age within that memory budget (least recently used dropped first, and under memory
  pressure); a budget of 0 is the setting under which it keeps none, so this is the state every
  deployment past the budget is in. One wake per project.

The issue's full run is ``--projects 1000`` (the default); ``--projects 10`` or ``100`` is the
quick mode. Wakes are sequential; the machine's load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.platformkit import Platform, tar_gz  # noqa: E402

EXAMPLE = ROOT / "examples" / "fastapi-uv"
BASE = "phemeral.localhost"
PROCFILE = "web: uvicorn main:app --host 0.0.0.0 --port $PORT --proxy-headers\n"
SLOW_MS = 300.0  # a wake at least this slow is shown with its phases
LIST_PAGE = 50  # the dashboard's projects page: the first page is what a visit costs


def example_files(declared: bool) -> dict[str, str]:
    files = {p.name: p.read_text() for p in EXAMPLE.iterdir() if p.is_file()}
    if declared:
        files["Procfile"] = PROCFILE
    return files


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f}"


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
    swap_cached = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SwapCached:"):
            swap_cached = int(line.split()[1])
    return {
        "swap_cached": swap_cached,  # pages in swap and still in memory (host-wide)
        "apps_pss": sum(rollup_kb(p, "Pss") for p in apps),
        "apps_swap": sum(rollup_kb(p, "SwapPss") for p in apps),
        "apps_rss": sum(rollup_kb(p, "Rss") for p in apps),
        "apps_processes": len(apps),
        "control_rss": sum(rollup_kb(p, "Rss") for p in control),
        "dataplane_rss": rollup_kb(serve_pid, "Rss") + sum(rollup_kb(p, "Rss") for p in routers),
    }


# -- requests ---------------------------------------------------------------------------------


def request_ms(port: int, host: str, expect: bytes = b"HTTP/1.1 200") -> float:
    """Connect → first response byte of ``GET /`` for ``host`` through the router."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(request)
        data = conn.recv(65536)
        elapsed = (time.perf_counter() - started) * 1000
        while chunk := conn.recv(65536):
            data += chunk
    if not data.startswith(expect):
        raise SystemExit(f"unexpected answer from {host}: {data[:200]!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def line(label: str, samples: list[float]) -> str:
    if not samples:
        return f"{label:<44} n=0"
    return (
        f"{label:<44} n={len(samples):<5} p50 {statistics.median(samples):7.1f} ms   "
        f"p99 {percentile(samples, 99):7.1f} ms   max {max(samples):7.1f} ms   ({load()})"
    )


def states(api: httpx.Client, ids: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for did in ids:
        body: dict[str, Any] = api.get(f"/deployments/{did}").json()
        out[did] = (body["instances"]["state"], body["instances"]["tier"])
    return out


def wake_groups(api: httpx.Client, ids: list[str]) -> dict[str, str]:
    """Each deployment's tier, a paged one split by whether its hot set is in memory."""
    out = {}
    for did in ids:
        instances: dict[str, Any] = api.get(f"/deployments/{did}").json()["instances"]
        tier = instances["tier"]
        out[did] = f"{tier}, hot set in" if instances.get("hot_set_in") else tier
    return out


def wake_phases(api: httpx.Client, did: str) -> dict[str, float]:
    """Where its last wake's time went (phase → ms), as the runtime traced it."""
    instances: dict[str, Any] = api.get(f"/deployments/{did}").json()["instances"]
    return dict(instances.get("last_wake_phases") or {})


def median_phases(traces: list[dict[str, float]]) -> str:
    """Each phase's median over the wakes (a wake without the phase counts 0)."""
    names: list[str] = []
    for trace in traces:
        names += [n for n in trace if n not in names]
    return (
        ", ".join(f"{n} {statistics.median(t.get(n, 0.0) for t in traces):.1f}" for n in names)
        or "none traced"
    )


def slow_wakes(slow: list[tuple[float, str, dict[str, float]]], shown: int = 8) -> list[str]:
    """Lines for the wakes of at least SLOW_MS: the slowest with their phases, and where the
    time of them all went (``outside``: before the runtime's wake began or after its answer
    left, i.e. in the router, the client or the kernel's queues)."""
    if not slow:
        return []
    lines = [f"  {len(slow)} wakes took >= {SLOW_MS:.0f} ms; the slowest:"]
    totals: dict[str, float] = {}
    for sample, did, phases in sorted(slow, reverse=True):
        traced = sum(ms for name, ms in phases.items() if name not in ("forked", "loop_stalled"))
        parts = {**phases, "outside": max(0.0, sample - traced)}
        for name, ms in parts.items():
            totals[name] = totals.get(name, 0.0) + ms
        if len(lines) <= shown:
            text = ", ".join(f"{name} {ms:.0f}" for name, ms in parts.items())
            lines.append(f"    {sample:7.0f} ms {did}: {text}")
    whole = sum(sample for sample, _, _ in slow)
    inside = ("forked", "loop_stalled")  # parts of the others' time, shown apart
    share = ", ".join(
        f"{name} {100 * ms / whole:.0f}%"
        for name, ms in sorted(totals.items(), key=lambda t: -t[1])
        if name not in inside
    )
    within = ", ".join(f"{n} {100 * totals[n] / whole:.0f}%" for n in inside if n in totals)
    lines.append(f"    their time: {share}" + (f" (within them: {within})" if within else ""))
    return lines


def settle_hot_sets(api: httpx.Client, ids: list[str], timeout: float = 600.0) -> tuple[int, float]:
    """Wait until the number of hot sets read back in stops changing for 20 s (the sweep reads
    them back a few at a time after a mass page-out); that number and the seconds it took."""
    started = time.monotonic()
    last, since = -1, started
    while time.monotonic() - started < timeout:
        count = sum(group.endswith("hot set in") for group in wake_groups(api, ids).values())
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 20:
            break
        time.sleep(2.0)
    return last, time.monotonic() - started


def wait_for(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.5) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            print(f"  ({what}: not reached after {timeout:g} s)", flush=True)
            break
        time.sleep(poll)
    return time.monotonic() - started


def all_dormant(api: httpx.Client, ids: list[str]) -> bool:
    return all(s in DORMANT for s in states(api, ids).values())


DORMANT = {("dormant", "template"), ("dormant", "paged")}


def all_paged(api: httpx.Client, ids: list[str]) -> bool:
    return all(s == ("dormant", "paged") for s in states(api, ids).values())


def all_projects(api: httpx.Client) -> list[dict[str, Any]]:
    """Every project, page after page (``GET /api/projects`` answers one page at a time)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = api.get("/projects", params={"cursor": cursor, "limit": 500})
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            return items


def timed_get(api: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = api.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


# -- the run ----------------------------------------------------------------------------------


class Fleet:
    """The platform, its API client and the projects deployed so far."""

    def __init__(self, platform: Platform, args: argparse.Namespace) -> None:
        self.platform = platform
        self.args = args
        self.ids: list[str] = []  # deployment ids, index = project number
        self.declared: set[str] = set()
        self.seed_uid: int | None = None
        self.results: list[str] = []
        self.failed: list[str] = []

    def api(self) -> httpx.Client:
        return self.platform.client()

    def is_declared(self, index: int) -> bool:
        every = self.args.declared_every
        return bool(every) and index % every == every - 1

    def deploy(self, start: int, stop: int) -> None:
        """Projects ``d{start}`` … ``d{stop - 1}``, one deployment each (reused when present)."""
        with self.api() as api:
            existing = {p["name"]: p for p in all_projects(api)}
            started = time.monotonic()
            mark, marked = started, start
            index = start
            if index == 0 and stop > 0:  # the first one: a real cold build, the seed
                self.ids.append(self._one(api, 0, existing))
                print(f"  d0 (cold build) in {time.monotonic() - started:.0f} s", flush=True)
                index = 1
            pool = ThreadPoolExecutor(max_workers=self.args.batch)
            while index < stop:
                batch = range(index, min(stop, index + self.args.batch))

                def one(i: int) -> str | None:
                    try:
                        with self.api() as client:
                            return self._one(client, i, existing)
                    except (Exception, SystemExit) as exc:  # counted and reported, not fatal
                        self.failed.append(f"d{i}: {exc}")
                        print(f"  d{i} failed: {exc}", flush=True)
                        return None

                self.ids += [did for did in pool.map(one, batch) if did is not None]
                index = batch.stop
                if index // 100 > marked // 100 or index == stop:
                    now = time.monotonic()
                    per_100 = (now - mark) / (index - marked) * 100
                    print(
                        f"  {index}/{stop} deployed; the last {index - marked} in "
                        f"{now - mark:.0f} s ({per_100:.0f} s per 100; {load()})",
                        flush=True,
                    )
                    mark, marked = now, index
            pool.shutdown()
            took = time.monotonic() - started
            print(
                f"{stop - start} projects deployed in {took:.0f} s "
                f"({took / max(1, stop - start) * 100:.0f} s per 100; {load()})",
                flush=True,
            )

    def _one(self, api: httpx.Client, index: int, existing: dict[str, Any]) -> str:
        name = f"d{index}"
        declared = self.is_declared(index)
        if name in existing:
            listing = api.get(f"/projects/{name}/deployments").json()["items"]
            ok = [d for d in listing if d["status"] == "successful"]
            if ok:
                if declared:
                    self.declared.add(ok[0]["id"])
                if index == 0:
                    self.seed_uid = existing[name]["uid"]
                return str(ok[0]["id"])
        else:
            created = api.post("/projects", json={"name": name})
            assert created.status_code == 201, created.text
            uid = created.json()["uid"]
            if index == 0:
                self.seed_uid = uid
            elif self.args.seed and self.seed_uid is not None:
                seed_cache(self.platform.data_dir, self.seed_uid, uid)
        response = api.post(
            f"/projects/{name}/deployments",
            files={"archive": ("app.tar.gz", tar_gz(example_files(declared)), "application/gzip")},
        )
        assert response.status_code == 201, response.text
        did = str(response.json()["id"])
        deadline = time.monotonic() + 1800
        while True:
            body = api.get(f"/deployments/{did}").json()
            if body["status"] != "building":
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"deployment {did} of {name} still building after 1800 s")
            time.sleep(0.5)
        if body["status"] != "successful":
            raise SystemExit(f"deployment {did} of {name} failed: {body.get('failure_reason')}")
        if self.args.free_caches and index > 0:  # disk, not memory: a 1,000 run's 18 GB
            uid = existing[name]["uid"] if name in existing else created.json()["uid"]
            if isinstance(uid, int):
                shutil.rmtree(
                    self.platform.data_dir / "cache" / "projects" / str(uid) / "uv",
                    ignore_errors=True,
                )
        if declared:
            self.declared.add(did)
            if body.get("start_command_source") not in (None, "procfile", "Procfile"):
                print(f"  ({name}: start command from {body.get('start_command_source')})")
        return did

    def wait_dormant(self) -> None:
        with self.api() as api:
            took = wait_for("all scaled to zero", lambda: all_dormant(api, self.ids), 600, 1.0)
        print(f"  all {len(self.ids)} scaled to zero after {took:.0f} s", flush=True)

    # -- measurements -------------------------------------------------------------------------

    def scale_figures(self, label: str) -> None:
        """Listing, routing and template-tier wakes with ``len(self.ids)`` projects."""
        n = len(self.ids)
        port = self.platform.port
        out = self.results
        out.append(f"-- {n} projects ({label})")
        with self.api() as api:
            projects = [
                timed_get(api, f"/projects?limit={LIST_PAGE}") for _ in range(self.args.list_runs)
            ]
            names = [f"d{i}" for i in range(n)]
            deployments = [
                timed_get(api, f"/projects/{names[i % n]}/deployments")
                for i in range(self.args.list_runs)
            ]
        out.append(line(f"GET /api/projects (first page of {LIST_PAGE})", projects))
        out.append(line("GET /api/projects/{name}/deployments", deployments))
        unknown = [request_ms(port, f"nosuch{i}.{BASE}", b"HTTP/1.1 404") for i in range(200)]
        out.append(line("router: unknown host (404, no wake)", unknown))
        auto: list[float] = []
        declared: list[float] = []
        running: list[float] = []
        tiers: dict[str, list[float]] = {}
        for round_ in range(self.args.rounds):
            if round_:
                self.wait_dormant()
            with self.api() as api:
                before = states(api, self.ids)  # paged by now if older than page_out_after
            for did in self.ids:
                host = f"{did}.{BASE}"
                sample = request_ms(port, host)
                (declared if did in self.declared else auto).append(sample)
                tiers.setdefault(before[did][1], []).append(sample)
                running.append(request_ms(port, host))
        out.append(line("router: running app (2nd request)", running))
        out.append(line("wake: autodetected", auto))
        out.append(line("wake: declared (Procfile)", declared))
        out.append(line("wake: all", auto + declared))
        for tier, samples in sorted(tiers.items()):
            out.append(line(f"  of which from the {tier} tier", samples))
        print("\n".join(out[-7 - len(tiers) :]), flush=True)

    def memory_figures(self, label: str) -> None:
        assert self.platform.proc is not None
        mem = memory(self.platform.proc.pid)
        n = len(self.ids)
        with self.api() as api:
            census: dict[str, int] = {}
            for _, tier in states(api, self.ids).values():
                census[tier] = census.get(tier, 0) + 1
        tiers = ", ".join(f"{count} {tier}" for tier, count in sorted(census.items()))
        self.results.append(
            f"memory at zero ({label}; tiers: {tiers}), per project: resident PSS "
            f"{mem['apps_pss'] / n / 1024:.1f} MiB, in swap {mem['apps_swap'] / n / 1024:.1f} "
            f"MiB (RSS {mem['apps_rss'] / n / 1024:.1f} MiB; {mem['apps_processes']} processes, "
            f"total PSS {mem['apps_pss'] / 1024:.0f} MiB for {n} projects; host swap cache "
            f"{mem['swap_cached'] / 1024:.0f} MiB; {load()})"
        )
        self.results.append(
            f"control plane RSS {mem['control_rss'] / 1024:.0f} MiB; "
            f"data plane RSS {mem['dataplane_rss'] / 1024:.0f} MiB"
        )
        print("\n".join(self.results[-2:]), flush=True)

    def wake_each(self, label: str, by_tier: bool = False) -> None:
        """One wake per project; with ``by_tier`` split by the tier each was on."""
        with self.api() as api:
            tiers = wake_groups(api, self.ids)
        groups: dict[str, list[float]] = {}
        phases: dict[str, list[dict[str, float]]] = {}
        slow: list[tuple[float, str, dict[str, float]]] = []
        with self.api() as api:
            for did in self.ids:
                sample = request_ms(self.platform.port, f"{did}.{BASE}")
                kind = "declared" if did in self.declared else "autodetected"
                tier = tiers[did] if by_tier else ""
                group = f"{tier} {kind}".strip()
                groups.setdefault(group, []).append(sample)
                traced = wake_phases(api, did)  # where its time went, before its next wake
                phases.setdefault(group, []).append(traced)
                if sample >= SLOW_MS:
                    slow.append((sample, did, traced))
        every = [s for samples in groups.values() for s in samples]
        self.results.append(line(label, every))
        for group, samples in sorted(groups.items()):
            self.results.append(line(f"  of which {group}", samples))
            self.results.append(f"    median phases: {median_phases(phases[group])}")
        described = slow_wakes(slow)
        self.results.extend(described)
        print("\n".join(self.results[-1 - 2 * len(groups) - len(described) :]), flush=True)

    def wait_paged(self, what: str) -> float:
        """Wait until every deployment is on the paged tier; the seconds it took."""
        with self.api() as api:
            return wait_for(
                what,
                lambda: all_paged(api, self.ids),
                self.args.page_out_after + 60 + len(self.ids),
                1.0,
            )

    def stop_timeout(self) -> float:
        """How long a stop may clean up before it is killed: stopping hundreds of templates,
        their mounts and namespaces takes minutes on a loaded 2-core box (a kill leaves them
        to the next start, or behind)."""
        return max(60.0, 2.0 * len(self.ids))

    def restart(self, env: dict[str, str] | None = None) -> float:
        old = self.platform
        old.stop(timeout=self.stop_timeout())
        new = Platform(old.data_dir, args=old.args, env={**old.env, **(env or {})})
        new.port = old.port
        self.platform = new
        started = time.monotonic()
        new.start(timeout=300)
        return time.monotonic() - started


def seed_cache(data_dir: Path, seed_uid: int, uid: int) -> None:
    """Give project ``uid`` a copy of the seed project's package cache (its own uid's files)
    and the markers saying which dependency sets it already holds."""
    projects = data_dir / "cache" / "projects"
    source, target = projects / str(seed_uid), projects / str(uid)
    target.mkdir(mode=0o711, exist_ok=True)
    (target / "keys").mkdir(mode=0o700, exist_ok=True)
    for marker in (source / "keys").glob("*.warm"):
        shutil.copy2(marker, target / "keys" / marker.name)
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source / "uv"), str(target / "uv")], check=True
    )
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(target / "uv")], check=True)


# Warming loads one template at a time: on a loaded 2-core box one load can take 10 s and more,
# so a count unchanged for less than this is not the end of it.
STILL_WARMING = 45.0


def settle_warming(fleet: Fleet, timeout: float = 300.0) -> tuple[int, float]:
    """Wait until the number of deployments with a template (resident or paged out) stops
    changing for `STILL_WARMING` s."""
    started = time.monotonic()
    last, since = -1, time.monotonic()
    with fleet.api() as api:
        while time.monotonic() - started < timeout:
            warm = sum(t in DORMANT for t in states(api, fleet.ids).values())
            if warm != last:
                last, since = warm, time.monotonic()
            elif warm == len(fleet.ids) or time.monotonic() - since > STILL_WARMING:
                break
            time.sleep(1.0)
    return last, time.monotonic() - started


def settle_rehearsals(fleet: Fleet, offset: int, timeout: float = 900.0) -> tuple[int, float]:
    """Wait until the platform says no rehearsal is left to do (its log, from ``offset``), or
    none started for 90 s; the rehearsals done and the seconds it took."""
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < timeout:
        text = fleet.platform.log.read_bytes()[offset:].decode(errors="replace")
        lines = [ln for ln in text.splitlines() if "more to rehearse" in ln]
        done = sum(int(ln.split("rehearsed ")[1].split()[0]) for ln in lines)
        if lines and " 0 more to rehearse" in lines[-1]:
            break
        if not lines and time.monotonic() - started > 90:
            break
        time.sleep(2.0)
    return done, time.monotonic() - started


def settle_after_start(fleet: Fleet, offset: int) -> str:
    """Wait for a start's warming, then ``--settle`` s (a warmed template is re-forked once
    its shared one learned), then its rehearsals (the log from ``offset``); what happened."""
    warmed, settle = settle_warming(fleet, max(300.0, 3.0 * len(fleet.ids)))
    time.sleep(fleet.args.settle)
    rehearsed, took = settle_rehearsals(fleet, offset)
    return (
        f"{warmed}/{len(fleet.ids)} warmed {settle:.0f} s later; {rehearsed} rehearsed in the "
        f"next {took:.0f} s"
    )


def restart_only(fleet: Fleet) -> None:
    """The after-restart phase alone, on the projects of an earlier run (`--restart-only`)."""
    fleet.deploy(0, fleet.args.projects)  # all reused: no build
    fleet.results.append(f"-- after a start: {settle_after_start(fleet, 0)}")
    fleet.memory_figures("after start, warmed")
    fleet.wake_each("wake after a platform start", by_tier=True)
    fleet.wait_dormant()
    time.sleep(30)  # the background paging that the wakes held back catches up
    fleet.memory_figures("after start, 30 s later")
    fleet.wake_each("wake after a platform start, again", by_tier=True)


def log_size(fleet: Fleet) -> int:
    try:
        return fleet.platform.log.stat().st_size
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000, help="quick mode: 10 or 100")
    parser.add_argument("--rounds", type=int, default=2, help="template-tier wakes per project")
    parser.add_argument("--batch", type=int, default=20, help="deployments created in parallel")
    parser.add_argument("--build-concurrency", type=int, default=4)
    parser.add_argument(
        "--declared-every", type=int, default=2, help="every k-th project has a Procfile (0: none)"
    )
    parser.add_argument(
        "--no-seed", dest="seed", action="store_false", help="every project's first build cold"
    )
    parser.add_argument("--list-runs", type=int, default=20)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="s to wait after warming, before waking"
    )
    parser.add_argument(
        "--page-out-after",
        type=float,
        default=20.0,
        help="s unused before a dormant template is paged out (the platform's default is 300)",
    )
    parser.add_argument(
        "--swap-file-mb", type=int, default=0, help="default: 1 GiB + 40 MiB per project"
    )
    parser.add_argument(
        "--free-caches",
        action="store_true",
        help="delete each project's seeded package cache once it is deployed (disk only)",
    )
    parser.add_argument(
        "--warm-budget-mb",
        type=int,
        help="the template budget after the first restart (default: half the memory); a quick "
        "run at small N sets it to what 1,000 projects would leave resident, so warming goes "
        "past it into swap",
    )
    parser.add_argument(
        "--hot-set-budget-mb", type=int, help="the hot-set budget (default: a quarter of memory)"
    )
    parser.add_argument(
        "--restart-only",
        action="store_true",
        help="with --data-dir of an earlier run: start on it (the warming of a restart, with "
        "--warm-budget-mb), wait for warming and rehearsals, measure memory and one wake each",
    )
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a background job may ignore) stops the platform cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="phemeral-density-"))
    tmp.chmod(0o755)
    data_dir = args.data_dir or tmp / "data"
    serve_args = ["--idle-timeout", str(args.idle_timeout)]
    env = {
        "PHEMERAL_BUILD_CONCURRENCY": str(args.build_concurrency),
        "PHEMERAL_PAGE_OUT_AFTER": str(args.page_out_after),
        "PHEMERAL_LOG_LEVEL": "info",  # rehearsals' progress (`settle_rehearsals`)
        # the paged tier's swap file (unless the host has swap): ~35 MiB per paged template
        "PHEMERAL_SWAP_FILE_MB": str(args.swap_file_mb or 1024 + 40 * args.projects),
    }
    if args.hot_set_budget_mb is not None:
        env["PHEMERAL_HOT_SET_BUDGET_MB"] = str(args.hot_set_budget_mb)
    if args.restart_only and args.warm_budget_mb:
        env["PHEMERAL_WARM_BUDGET_MB"] = str(args.warm_budget_mb)
    fleet = Fleet(Platform(data_dir, args=serve_args, env=env), args)
    started = time.monotonic()
    try:
        fleet.platform.start(timeout=120)
        print(f"phemeral serve on port {fleet.platform.port}, log {fleet.platform.log}")
        print(f"deploying {args.projects} projects ({load()})", flush=True)
        if args.restart_only:
            restart_only(fleet)
            return
        small = min(10, args.projects)
        fleet.deploy(0, small)
        fleet.wait_dormant()
        fleet.scale_figures("right after deploying them")
        if args.projects > small:
            fleet.wait_dormant()
            fleet.deploy(small, args.projects)
            fleet.wait_dormant()
            time.sleep(3)  # a first template re-forks once after its shared template learned
            fleet.memory_figures("after deploy")
            fleet.scale_figures("right after deploying them")
        else:
            time.sleep(3)
            fleet.memory_figures("after deploy")

        took = fleet.wait_paged("every template paged out")
        fleet.results.append(
            f"-- longest idle while memory and swap last: all {len(fleet.ids)} paged out "
            f"{took:.0f} s after their last wakes (page_out_after {args.page_out_after:.0f} s)"
        )
        fleet.memory_figures("paged tier")
        rehearsed, took = settle_rehearsals(fleet, 0)
        fleet.results.append(f"-- {rehearsed} rehearsals by now (the last {took:.0f} s)")
        fleet.wake_each("wake from the paged tier, woken once before", by_tier=True)
        # Those wakes taught each template its hot set; paged out again, the hot sets within
        # the hot-set budget are read back in: the steady state of a long idle.
        fleet.wait_dormant()
        took = fleet.wait_paged("every template paged out again")
        with fleet.api() as api:  # the sweep reads the hot sets within the budget back in
            hot, settled = settle_hot_sets(api, fleet.ids)
        fleet.results.append(
            f"-- longest idle, paged out again {took:.0f} s after those wakes: {hot} hot sets "
            f"read back in within the hot-set budget, {settled:.0f} s later"
        )
        print(fleet.results[-1], flush=True)
        fleet.memory_figures("paged tier, hot sets")
        fleet.wake_each("wake from the paged tier, hot sets learned", by_tier=True)

        budget = args.warm_budget_mb
        offset = log_size(fleet)
        took = fleet.restart({"PHEMERAL_WARM_BUDGET_MB": str(budget)} if budget else None)
        fleet.results.append(
            f"-- after a platform restart: API back in {took:.1f} s, "
            f"{settle_after_start(fleet, offset)}"
        )
        fleet.memory_figures("after restart, warmed")
        fleet.wake_each("wake after a platform restart", by_tier=True)

        took = fleet.restart({"PHEMERAL_WARM_BUDGET_MB": "0"})
        with fleet.api() as api:
            tiers = states(api, fleet.ids)
        deep = sum(t == ("stopped", "none") for t in tiers.values())
        fleet.results.append(
            f"-- deep tier forced (restart with PHEMERAL_WARM_BUDGET_MB=0): "
            f"{deep}/{len(fleet.ids)} with nothing resident"
        )
        fleet.wake_each("wake on the deep tier")
    finally:
        fleet.platform.stop(timeout=fleet.stop_timeout())
        print(
            f"\n{len(fleet.ids)} hello-world FastAPI projects "
            f"({len(fleet.declared)} with a Procfile command), {os.cpu_count()} CPUs, "
            f"{'root, sandboxed' if os.geteuid() == 0 else 'not root'}, "
            f"{'seeded package caches' if args.seed else 'cold builds'}; "
            f"whole run {time.monotonic() - started:.0f} s; now {load()}"
        )
        for result in fleet.results:
            print(result)
        if fleet.failed:
            print(f"{len(fleet.failed)} deployments failed (left out of every figure):")
            for failure in fleet.failed:
                print(f"  {failure}")
        if args.keep or args.data_dir or fleet.failed:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
