"""Wake → first byte for scaled-to-zero deployments, through the router, per stack and tier.

    .venv/bin/python bench/wake.py [--runs 50] [--cold-runs 15] [--stacks fastapi,flask,django]
        [--read-only-app-dir] [--networks isolated,host]
        [--contention [--boost nice,weight]]

It constructs hello-world FastAPI (uvicorn), Flask (gunicorn) and Django (gunicorn) releases
on real venvs (built once with uv, cached like the runtime tests' ones), a Procfile-style
declared command with options (``python -m gunicorn --workers 2 --timeout 30 --config
gunicorn.conf.py app:app --bind 0.0.0.0:${PORT:-8000}``, which wakes through the template like
the autodetected ones), and a custom start command run as given (``echo starting; exec uvicorn
main:app --port $PORT``: not a plain server command line, so the command path). A platform
process (the runtime and the router, as `phemeral serve` wires them, sandboxed when root)
serves them; this process is the client, so client and platform do not share an event loop.

For each deployment and run: scale it to zero (stop the instance; the template stays dormant),
then time one ``GET /`` through the router from ``connect`` to the first response byte.
Tiers: ``template`` (dormant pre-loaded template: the normal scaled-to-zero state),
``paged`` (``--paged-runs``: a fresh template of its own paged out to swap before each wake,
as after ``page_out_after``, then the same template paged out again after each wake: it keeps
the hot set it and its last fork touched, read back in after the page-out ("paged, hot set"),
or left in swap as past the hot-set budget ("paged, hot set out": the wake submits the reads
of the hot set alone); "paged, first": a fresh template woken once on the template tier, then
paged out (a first long idle: its hot set is what that fork wrote and the file pages it
faulted in); "paged, first, swept": the same after a sweep while it was dormant (which
writes its anonymous pages out once, so that its wake shows its reads too: "template,
learning" is that wake); needs swap: the host's, or a swap file this bench turns on for its
run)
and
``deep`` (nothing resident: what follows a long idle period, memory pressure or a platform
restart). Deployments of one project with one dependency set (lock hash) share a framework
template; each forks its own per-deployment template from it (the app imported and warmed).
``--networks isolated,host`` runs one platform per ``network`` setting side by side and
interleaves their samples (the cost of a network namespace per sandbox, measured under the same
load). Idle memory: the USS of each deployment's own template, and of the shared framework template
(its private pages only: pages it shares with the forks count for nobody in USS).

``--contention``: template-tier wakes with and without a CPU burner on every core
(``os.cpu_count()`` processes spinning in a tight loop at nice 0, in the bench's own cgroup like
any other work on the box), in alternating blocks of ``--block`` wakes per deployment so both
conditions see the same background load; p50/p99 printed side by side. The burners start before
and stop after each block and die with the bench (``PR_SET_PDEATHSIG``, and killed on any exit).
``--boost nice,weight`` adds conditions under the burner with what the platform could do for the
wake path: ``nice`` renices every process of the platform side (router, runtime, templates, their
instances) to ``--boost-nice`` (default -5) for those blocks; ``weight`` raises the CPU weight of
the platform's cgroup parent (v1 ``cpu.shares`` 10240 instead of 1024, v2 ``cpu.weight`` 1000
instead of 100: the cgroups of every app instance and template), restored afterwards;
``nice+weight`` both.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import json
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = "wake.bench"
STACKS = ["fastapi", "flask", "django"]
PROCFILE_COMMAND = (
    "python -m gunicorn --workers 2 --timeout 30 --config gunicorn.conf.py app:app "
    "--bind 0.0.0.0:${PORT:-8000} --access-logfile -"
)


# -- platform side (a child process) ----------------------------------------------------------


async def platform(workdir: Path, writable_app_dir: bool, network: str) -> None:
    from phemeral.models import DeploymentRoute, DeploymentStatus, RoutingSnapshot, Upstream
    from phemeral.router.server import serve_router
    from phemeral.runtime.supervisor import Runtime
    from phemeral.settings import Settings
    from tests.runtime.conftest import FLASK_APP, make_release

    class NullSink:
        def write(self, lines: list[object]) -> None:
            pass

    releases = {
        f"{stack}-hello": make_release(workdir, f"{stack}-hello", stack, lock_hash=f"{stack}-lock")
        for stack in STACKS
    }
    # A Procfile-style declared command with its options: a template wake too.
    releases["procfile-gunicorn"] = make_release(
        workdir,  # the project's releases dir: it forks from the project's shared template
        "procfile-gunicorn",
        "flask",
        custom=True,
        start_command=PROCFILE_COMMAND,
        files={"app.py": FLASK_APP, "gunicorn.conf.py": "timeout = 30\nkeepalive = 5\n"},
        lock_hash="flask-lock",
    )
    releases["custom-hello"] = make_release(
        workdir / "custom",
        "custom-hello",
        "fastapi",
        custom=True,
        start_command="echo starting; exec uvicorn main:app --port $PORT",
    )
    settings = Settings(  # rehearsals only when a row asks for one ("rehearsed")
        data_dir=workdir / "data",
        base_domain=BASE,
        boot_timeout=60,
        network=network,
        rehearse=False,
    )
    runtime = Runtime(settings, NullSink(), writable_app_dir=writable_app_dir)
    await runtime.start()
    deployments = {
        did: DeploymentRoute(DeploymentStatus.SUCCESSFUL, "p", "production") for did in releases
    }
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    router = await serve_router(
        host="127.0.0.1",
        port=0,
        snapshot=RoutingSnapshot(BASE, deployments, {}),
        backends=runtime,
        control_plane=Upstream("127.0.0.1", 9),
        log_sink=NullSink(),
        sock=listener,
    )

    class Log:
        def write(self, stage: str, message: str) -> None:
            pass

    try:
        for release in releases.values():
            await runtime.boot_check(release, Log())
        print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        budget = runtime.hot_set_budget_kb

        async def fresh_template(did: str) -> None:
            """Drop its template and load one of its own (not forked from a shared one)."""
            dep = runtime._deployments[did]
            await runtime.drop_template(did)
            runtime._templates.share = False
            try:
                async with dep.template_lock:
                    await runtime._templates.load(dep)
            finally:
                runtime._templates.share = True

        while line := (await reader.readline()).decode().strip():
            op, did = line.split()
            dep = runtime._deployments[did]
            if op != "state":
                runtime.hot_set_budget_kb = budget
            if op == "fresh":  # a template of its own, resident, as `_collapse` gives one
                await runtime._stop_instance(dep, "bench")
                await fresh_template(did)
                reply = {"ok": True}
            elif op in ("repage", "repage-out"):
                # The same template paged out again: it keeps its hot set, read back within the
                # hot-set budget; "repage-out": as past the budget, left in swap until the next
                # wake is done (the runtime's sweep applies the budget too).
                await runtime._stop_instance(dep, "bench")
                await runtime.page_out_template(did)
                await asyncio.sleep(1.2)
                runtime.hot_set_budget_kb = 0 if op == "repage-out" else budget
                await runtime.reclaim_paged()
                reply = {"hot_kb": dep.hot_kb, "hot_in": dep.hot_in}
            elif op in ("idle", "deep", "paged", "rehearsed"):
                await runtime._stop_instance(dep, "bench")
                if op == "deep":
                    await runtime.drop_template(did)
                reply: dict[str, object] = {"ok": True}
                if op in ("paged", "rehearsed"):
                    # What page_out_after leaves: a template of its own (as `_collapse` gives a
                    # dormant deployment), paged out. A new one each time: the pages an earlier
                    # wake read back linger in the swap cache, and each sample must read from swap.
                    await fresh_template(did)
                    reply["paged_bytes"] = await runtime.page_out_template(did)
                    # What the sweep does once the writes are done: the pages leave memory (no
                    # copy stays in the swap cache), so the wake reads them from the swap device.
                    await asyncio.sleep(1.2)
                    await runtime.reclaim_paged()
                if op == "rehearsed":
                    # As after a restart: paged out with no hot set known, then the
                    # background's rehearsal (a wake, its health-check request, a stop that
                    # learns the hot set, paged out again), the hot set kept within the budget.
                    reply["rehearsed"] = await runtime._rehearsals.rehearse(dep)
                    await asyncio.sleep(1.2)
                    await runtime.reclaim_paged()
            else:
                # The sweep measures what a dormant deployment keeps (a few per sweep; a change
                # such as a page-out drops the figure until the next): no figure yet reads 0.
                for _ in range(50):
                    await runtime.sweep()
                    state = runtime.instances(did)
                    if state.idle_pss_kb or state.idle_swap_kb or state.tier == "running":
                        break
                    await asyncio.sleep(0.1)
                shared = [s for s in runtime.shared_templates() if did in s["deployments"]]  # type: ignore[operator]
                reply = {
                    "tier": state.tier,
                    "wake_path": state.wake_path,
                    "idle_memory_kb": state.idle_memory_kb,
                    "idle_pss_kb": state.idle_pss_kb,
                    "idle_swap_kb": state.idle_swap_kb,
                    "shared_kb": shared[0]["memory_kb"] if shared else 0,
                }
            print(json.dumps(reply), flush=True)
    finally:
        await router.close()
        await runtime.close()


def turn_on_swap() -> None:
    """The paged tier needs swap: the host's, else a swap file for this run (root)."""
    from phemeral.runtime import paging

    if paging.swap_free_kb():
        return
    folder = Path(tempfile.mkdtemp(prefix="phemeral-wake-swap-"))
    swap = paging.ensure_swap_file(folder, 1024)
    if swap is None:
        raise SystemExit("--paged-runs needs swap (as root this bench turns on a swap file)")

    def off() -> None:
        paging.release_swap_file(swap)
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(off)


# -- contention -------------------------------------------------------------------------------

# A tight loop at normal priority that dies with its parent (PR_SET_PDEATHSIG = 1).
BURN = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
while True:
    pass
"""


class Burner:
    """``os.cpu_count()`` processes spinning at nice 0 while running; killed on any exit."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count or os.cpu_count() or 1
        self.procs: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop)

    def start(self) -> None:
        if not self.procs:
            self.procs = [
                subprocess.Popen([sys.executable, "-c", BURN, str(os.getpid())])
                for _ in range(self.count)
            ]
            time.sleep(0.2)  # spinning on every core before the first sample

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self.procs = []


CGROUP = Path("/sys/fs/cgroup")


def weight_file() -> tuple[Path, str, str] | None:
    """The platform cgroup parent's CPU weight file, its default and its boosted value."""
    if (CGROUP / "cgroup.controllers").exists():
        return CGROUP / "phemeral" / "cpu.weight", "100", "1000"
    if (CGROUP / "cpu" / "phemeral" / "cpu.shares").exists():
        return CGROUP / "cpu" / "phemeral" / "cpu.shares", "1024", "10240"
    return None


def subtree_pids(pid: int) -> list[int]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def renice(pid: int, value: int) -> None:
    """Every process (and thread) of the platform side to ``value``."""
    for proc in subtree_pids(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{proc}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(task.name), value)


class Conditions:
    """Switches between quiet, burner, and burner with the platform side boosted."""

    def __init__(self, platform_pid: int, boost_nice: int) -> None:
        self.pid = platform_pid
        self.nice = boost_nice
        self.burner = Burner()
        self.weight = weight_file()
        self.original = self.weight[0].read_text().strip() if self.weight else None
        atexit.register(self.reset)

    def enter(self, condition: str) -> None:
        if condition == "quiet":
            self.burner.stop()
        else:
            self.burner.start()
        renice(self.pid, self.nice if "nice" in condition else 0)
        if self.weight is not None:
            path, default, boosted = self.weight
            with contextlib.suppress(OSError):
                path.write_text(boosted if "weight" in condition else (self.original or default))

    def reset(self) -> None:
        self.burner.stop()
        if self.weight is not None and self.original is not None:
            with contextlib.suppress(OSError):
                self.weight[0].write_text(self.original)


def contention_conditions(boost: str) -> list[str]:
    out = ["quiet", "burner"]
    for item in [b for b in boost.split(",") if b]:
        if item not in ("nice", "weight", "nice+weight"):
            raise SystemExit(f"--boost: nice, weight or nice+weight, not {item!r}")
        out.append(f"burner+{item}")
    return out


# -- client side ------------------------------------------------------------------------------


def first_byte_ms(port: int, host: str) -> float:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(request)
        first = conn.recv(65536)
        elapsed = (time.perf_counter() - started) * 1000
        data = first
        while chunk := conn.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer from {host}: {data[:200]!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def contention(
    wake: Callable[[str], float],
    dids: list[str],
    names: list[str],
    platform_pid: int,
    args: argparse.Namespace,
) -> dict[str, dict[str, list[float]]]:
    """Per deployment and condition, ``--runs`` template-tier wakes in alternating blocks."""
    conditions = Conditions(platform_pid, args.boost_nice)
    table: dict[str, dict[str, list[float]]] = {}
    loads: list[float] = []
    try:
        for did in dids:
            samples: dict[str, list[float]] = {name: [] for name in names}
            conditions.enter("quiet")
            for _ in range(2):  # warm-up
                wake(did)
            done, block = 0, 0
            while done < args.runs:
                count = min(args.block, args.runs - done)
                order = names[block % len(names) :] + names[: block % len(names)]
                for name in order:
                    conditions.enter(name)
                    samples[name] += [wake(did) for _ in range(count)]
                    loads.append(os.getloadavg()[0])
                done += count
                block += 1
            conditions.enter("quiet")
            table[did] = samples
            cells = "   ".join(
                f"{name} {statistics.median(v):.1f} / {percentile(v, 99):.1f}"
                for name, v in samples.items()
            )
            print(f"  {did} (p50 / p99 ms): {cells}; load {load_text()}", flush=True)
    finally:
        conditions.reset()
    args.loads = loads
    return table


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def print_contention(
    table: dict[str, dict[str, list[float]]], names: list[str], args: argparse.Namespace
) -> None:
    loads = getattr(args, "loads", []) or [0.0]
    print(
        f"\ntemplate-tier wake → first byte through the router under contention, ms "
        f"({os.cpu_count()} CPUs, burner: {os.cpu_count()} spinning processes at nice 0; "
        f"{'root, sandboxed' if os.geteuid() == 0 else 'not root'}); "
        f"{args.runs} wakes per condition in blocks of {args.block}"
    )
    if any("nice" in n for n in names):
        print(f"boost nice: the platform side reniced to {args.boost_nice}")
    weight = weight_file()
    if any("weight" in n for n in names) and weight is not None:
        print(f"boost weight: {weight[0]} {weight[1]} → {weight[2]}")
    header = f"{'deployment':<18}" + "".join(f" {n:>21}" for n in names)
    print(header)
    print(f"{'':<18}" + "".join(f" {'p50 / p99':>21}" for _ in names))
    worst: dict[str, float] = {}
    for did, samples in table.items():
        cells = []
        for name in names:
            values = samples[name]
            p99 = percentile(values, 99)
            worst[name] = max(worst.get(name, 0.0), p99)
            cells.append(f"{statistics.median(values):>9.1f} / {p99:>7.1f}")
        print(f"{did:<18}" + "".join(f" {c:>21}" for c in cells))
    print(
        f"load average (1 min) during the blocks: min {min(loads):.2f}, "
        f"median {statistics.median(loads):.2f}, max {max(loads):.2f}; now {load_text()}"
    )
    for name in names[1:]:
        verdict = "met" if worst[name] <= 75.0 else "MISSED"
        print(f"worst p99 with {name}: {worst[name]:.1f} ms (goal ≤ 75 ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument(
        "--stacks",
        default=",".join([*STACKS, "procfile"]),
        help="e.g. fastapi,flask (procfile: the declared gunicorn command)",
    )
    parser.add_argument(
        "--paged-runs",
        type=int,
        default=0,
        help="wakes from the paged tier (the template paged out to swap before each)",
    )
    parser.add_argument(
        "--read-only-app-dir",
        action="store_true",
        help="no writable overlay of the app directory per instance (to measure its cost)",
    )
    parser.add_argument(
        "--networks", default="auto", help="network settings run side by side: isolated,host"
    )
    parser.add_argument(
        "--contention",
        action="store_true",
        help="template-tier wakes with and without a CPU burner on every core, side by side",
    )
    parser.add_argument("--block", type=int, default=10, help="wakes per condition in a row")
    parser.add_argument(
        "--boost", default="", help="with --contention, also: nice,weight,nice+weight"
    )
    parser.add_argument("--boost-nice", type=int, default=-5)
    parser.add_argument("--platform", help=argparse.SUPPRESS)
    parser.add_argument("--network", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.platform:
        # Dies with the bench (SIGTERM when it is gone), and a SIGTERM stops it cleanly: its
        # templates, mounts and network namespaces go with it.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        asyncio.run(platform(Path(args.platform), not args.read_only_app_dir, args.network))
        return
    networks = args.networks.split(",")
    if args.contention and len(networks) > 1:
        raise SystemExit("--contention runs one platform: give one --networks value")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit stops the burners
    with tempfile.TemporaryDirectory(prefix="phemeral-wake-") as tmp:
        Path(tmp).chmod(0o755)
        if args.paged_runs:
            turn_on_swap()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        procs: dict[str, subprocess.Popen[str]] = {}
        ports: dict[str, int] = {}
        for network in networks:
            workdir = Path(tmp) / network
            workdir.mkdir(mode=0o755)
            procs[network] = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--platform",
                    str(workdir),
                    "--network",
                    network,
                    *(["--read-only-app-dir"] if args.read_only_app_dir else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        for network, proc in procs.items():
            assert proc.stdout is not None
            ports[network] = json.loads(proc.stdout.readline())["port"]

        def call(network: str, op: str, did: str) -> dict[str, object]:
            proc = procs[network]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{op} {did}\n")
            proc.stdin.flush()
            result: dict[str, object] = json.loads(proc.stdout.readline())
            return result

        rows = []
        stacks = [s for s in STACKS if s in args.stacks.split(",")]
        if args.contention:
            template_dids = [f"{s}-hello" for s in stacks]
            if "procfile" in args.stacks.split(","):
                template_dids.append("procfile-gunicorn")
            network = networks[0]

            def wake(did: str) -> float:
                call(network, "idle", did)
                time.sleep(0.05)
                return first_byte_ms(ports[network], f"{did}.{BASE}")

            names = contention_conditions(args.boost)
            try:
                table = contention(wake, template_dids, names, procs[network].pid, args)
            finally:
                for proc in procs.values():
                    assert proc.stdin is not None
                    proc.stdin.close()
                    proc.wait(timeout=60)
            print_contention(table, names, args)
            return
        plan = [(f"{s}-hello", "template", args.runs) for s in stacks]
        if "procfile" in args.stacks.split(","):
            plan.append(("procfile-gunicorn", "template", args.runs))
        if args.paged_runs:
            plan += [(f"{s}-hello", "paged", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "paged, rehearsed", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "paged, hot set", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "paged, hot set out", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "paged, first", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "paged, first, swept", args.paged_runs) for s in stacks]
            plan += [(f"{s}-hello", "template, learning", args.paged_runs) for s in stacks]
        plan += [(f"{s}-hello", "deep", args.cold_runs) for s in stacks if args.cold_runs]
        if args.cold_runs:
            plan += [("custom-hello", "custom command", args.cold_runs)]
        memory: dict[str, dict[str, object]] = {}
        paged_memory: dict[str, dict[str, object]] = {}
        hot_kb: list[int] = []
        for did, tier, runs in plan:
            samples: dict[str, list[float]] = {n: [] for n in networks}
            for _ in range(runs + 2):
                for network in networks:  # interleaved: both see the same machine load
                    op = {
                        "deep": "deep",
                        "paged": "paged",
                        "paged, rehearsed": "rehearsed",
                        "paged, hot set": "repage",
                        "paged, hot set out": "repage-out",
                    }
                    if tier in ("paged, first", "paged, first, swept", "template, learning"):
                        # A fresh template woken once on the template tier, then paged out: a
                        # first long idle. Its hot set is what that fork wrote, or, when a
                        # sweep ran before that wake (as one does while it is dormant), all
                        # that the wake touched, reads included (the learning page-out).
                        call(network, "fresh", did)
                        if tier != "paged, first":
                            call(network, "state", did)  # a sweep
                        time.sleep(0.05)
                        if tier == "template, learning":
                            op[tier] = "none"  # that wake is the sample
                        else:
                            first_byte_ms(ports[network], f"{did}.{BASE}")
                            op[tier] = "repage"
                    reply = (
                        call(network, op.get(tier, "idle"), did) if op.get(tier) != "none" else {}
                    )
                    if "hot_kb" in reply:
                        hot_kb.append(int(reply["hot_kb"]))  # type: ignore[call-overload]
                    time.sleep(0.05)
                    samples[network].append(first_byte_ms(ports[network], f"{did}.{BASE}"))
            for network in networks:
                if tier == "template":
                    call(network, "idle", did)
                    time.sleep(1.0)  # a first deployment re-forks its template after learning
                    memory[f"{did} ({network})"] = call(network, "state", did)
                if tier in ("paged, hot set", "paged, hot set out"):
                    call(network, "repage" if tier == "paged, hot set" else "repage-out", did)
                    kept = "in" if tier == "paged, hot set" else "out"
                    paged_memory[f"{did} (hot set {kept})"] = call(network, "state", did)
                rows.append((did, tier, network, samples[network][2:]))  # two warm-up wakes
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)

    print(
        f"wake → first byte through the router, ms ({os.cpu_count()} CPUs, "
        f"{'root, sandboxed' if os.geteuid() == 0 else 'not root'})"
    )
    print(
        f"{'deployment':<18} {'tier':<21} {'network':<9} {'n':>3} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'max':>7}"
    )
    for did, tier, network, samples in rows:
        print(
            f"{did:<18} {tier:<21} {network:<9} {len(samples):>3} "
            f"{statistics.median(samples):>7.1f} "
            f"{percentile(samples, 90):>7.1f} {percentile(samples, 99):>7.1f} {max(samples):>7.1f}"
        )
    print("\nidle memory while scaled to zero (USS; template tier):")
    print(
        f"  {'deployment':<28} {'own template':>12} {'shared framework (per project+lock)':>36}"
        "  wake path"
    )
    for did, state in memory.items():
        own = int(state["idle_memory_kb"]) / 1024  # type: ignore[call-overload]
        shared = int(state["shared_kb"]) / 1024  # type: ignore[call-overload]
        print(f"  {did:<28} {own:>8.1f} MiB {shared:>32.1f} MiB  {state.get('wake_path')}")
    if hot_kb:
        print(f"\nhot sets kept resident: median {statistics.median(hot_kb) / 1024:.1f} MiB")
    if paged_memory:
        print("\nwhat a deployment keeps on the paged tier:")
        for did, state in paged_memory.items():
            pss = int(state["idle_pss_kb"]) / 1024  # type: ignore[call-overload]
            swap = int(state["idle_swap_kb"]) / 1024  # type: ignore[call-overload]
            print(
                f"  {did:<28} {pss:>6.1f} MiB resident (PSS), {swap:>6.1f} MiB in swap"
                f"  ({state['tier']})"
            )
    print("  deep tier: 0 MiB (nothing resident)")


if __name__ == "__main__":
    main()
