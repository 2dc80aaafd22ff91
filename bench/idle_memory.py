"""Where the memory of projects scaled to zero goes: per process, per kind of page.

    .venv/bin/python bench/idle_memory.py [--projects 4] [--idle-timeout 1] [--maps 12]
        [--data-dir DIR] [--keep]

Starts a real `phemeral serve` (SQLite), deploys ``--projects`` hello-world FastAPI projects
(`examples/fastapi-uv`, one project each: own uid, sandbox and templates, as
`bench/density.py` does), lets them scale to zero, then reads ``/proc/PID/smaps_rollup`` of
every process the platform keeps for the apps (what `bench/density.py` sums: everything under
`phemeral serve` but itself, its router workers and the control plane) and prints:

- one line per process: its role (sandbox helper such as ``bwrap``, shared framework template,
  per-deployment template, …), PSS, USS (private clean + dirty), PSS of anonymous and of file
  pages, RSS;
- totals per role, per project;
- for one template of each kind, its ``--maps`` largest mappings by PSS (``/proc/PID/smaps``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from density import (  # noqa: E402
    all_dormant,
    children_of,
    cmdline,
    deploy,
    load,
    subtree,
    wait_for,
)

from tests.platformkit import Platform  # noqa: E402

FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Clean", "Private_Dirty")


def rollup(pid: int) -> dict[str, int]:
    out = dict.fromkeys(FIELDS, 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in out:
                out[name] = int(rest.split()[0])
    except OSError:
        pass
    return out


def mappings(pid: int) -> list[tuple[int, int, str]]:
    """(PSS kB, private kB, name) per mapping name, largest PSS first."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    name = ""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else "[anon]"
        elif head[0] == "Pss:":
            totals[name][0] += int(head[1])
        elif head[0] in ("Private_Clean:", "Private_Dirty:"):
            totals[name][1] += int(head[1])
    return sorted(((p, u, n) for n, (p, u) in totals.items()), reverse=True)


def exe_of(line: str) -> str:
    return Path(line.split(" ", 1)[0]).name if line else "?"


def role(pid: int) -> str:
    line = cmdline(pid)
    exe = exe_of(line)
    if exe.startswith("python") and "zygote.py" in line:
        parent = parent_of(pid)
        if parent is not None and exe_of(cmdline(parent)).startswith("python"):
            return "template (deployment, forked)"
        # launched alone: a shared framework template, or a deployment's own
        return "template (launched)"
    if exe.startswith("python"):
        return "python (server or other)"
    return f"helper {exe}"


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def app_pids(serve_pid: int) -> list[int]:
    tree = children_of()
    platform = {serve_pid}
    for child in tree.get(serve_pid, []):
        line = cmdline(child)
        if "phemeral.dataplane.child control" in line:
            platform.update(subtree(child, tree))
        elif "phemeral.dataplane.child router" in line:
            platform.add(child)
    return [p for p in subtree(serve_pid, tree) if p not in platform]


def report(serve_pid: int, projects: int, maps: int) -> None:
    pids = app_pids(serve_pid)
    by_role: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys((*FIELDS, "n"), 0))
    print(
        f"\n{'pid':>7}  {'role':<32} {'PSS':>7} {'USS':>7} {'anon':>7} {'file':>7} {'RSS':>7}  kB"
    )
    examples: dict[str, int] = {}
    for pid in sorted(pids):
        r = rollup(pid)
        kind = role(pid)
        examples.setdefault(kind, pid)
        uss = r["Private_Clean"] + r["Private_Dirty"]
        print(
            f"{pid:>7}  {kind:<32} {r['Pss']:>7} {uss:>7} {r['Pss_Anon']:>7} "
            f"{r['Pss_File']:>7} {r['Rss']:>7}"
        )
        for key in FIELDS:
            by_role[kind][key] += r[key]
        by_role[kind]["n"] += 1
    print(f"\nper role, MiB per project ({projects} projects):")
    total = 0
    for kind, r in sorted(by_role.items(), key=lambda kv: -kv[1]["Pss"]):
        total += r["Pss"]
        uss = r["Private_Clean"] + r["Private_Dirty"]
        print(
            f"  {kind:<32} n={r['n']:<3} PSS {r['Pss'] / projects / 1024:6.2f}  "
            f"USS {uss / projects / 1024:6.2f}  anon {r['Pss_Anon'] / projects / 1024:6.2f}  "
            f"file {r['Pss_File'] / projects / 1024:6.2f}"
        )
    print(f"  {'total':<32}       PSS {total / projects / 1024:6.2f} MiB per project")
    for kind, pid in examples.items():
        if not kind.startswith("template") or maps <= 0:
            continue
        print(f"\nlargest mappings of {kind} pid {pid} (PSS kB, private kB):")
        for pss, private, name in mappings(pid)[:maps]:
            print(f"  {pss:>7} {private:>7}  {name}")


def settle(count: Callable[[], int], quiet: float, timeout: float = 300) -> float:
    """Wait until ``count()`` stays the same for ``quiet`` s (templates re-forked or replaced
    after a deployment scaled to zero); seconds waited."""
    started = last_change = time.monotonic()
    last = count()
    while time.monotonic() - last_change < quiet and time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = count()
        if now != last:
            last, last_change = now, time.monotonic()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=4)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument(
        "--settle", type=float, default=8, help="s the app process count must stay unchanged"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="s to wait for one template per project"
    )
    parser.add_argument("--hold", type=float, default=0, help="s to stay up after the report")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="phemeral-idle-memory-"))
    tmp.chmod(0o755)
    data_dir = args.data_dir or tmp / "data"
    platform = Platform(data_dir, args=["--idle-timeout", str(args.idle_timeout)])
    try:
        platform.start(timeout=120)
        ids = deploy(platform, args.projects)
        wait_for("all scaled to zero", lambda: all_dormant(platform, ids), 300)
        assert platform.proc is not None
        serve = platform.proc.pid
        # One deployment per project: each ends with one template of its own (a shared
        # framework template and its fork are replaced once the deployment is dormant).
        forked = wait_for(
            "no forked template left",
            lambda: not any(role(p) == "template (deployment, forked)" for p in app_pids(serve)),
            args.timeout,
        )
        settled = settle(lambda: len(app_pids(serve)), args.settle)
        print(
            f"no forked template left after {forked:.0f} s, process count settled {settled:.0f} s"
        )
        print(f"serve pid {platform.proc.pid}; load average {load()} (1/5/15 min)")
        report(platform.proc.pid, len(ids), args.maps)
        if args.hold:
            time.sleep(args.hold)
    finally:
        platform.stop()
        if args.keep or args.data_dir:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
