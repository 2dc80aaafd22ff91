"""Reading ``/proc``: process trees, start times (to tell a pid from its reuse), memory (USS,
PSS)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (index 0 is the state)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot; with the pid it identifies one process."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_same_process(pid: int, started: int | None) -> bool:
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields and len(fields) > 1:
            parents[int(entry.name)] = int(fields[1])
    return parents


def children(pid: int) -> list[int] | None:
    """The children of ``pid`` (``/proc/PID/task/*/children``: each thread's own); None when
    the kernel does not offer that file (no ``CONFIG_PROC_CHILDREN``); [] once it is gone."""
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            if not task.exists():
                continue  # the thread ended meanwhile
            return None
        except OSError:
            continue
    return found


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every process below ``pid`` (host pids, any pid namespace), deepest last. Without
    ``parents`` it walks down from ``pid`` (`children`: as many reads as the tree has
    processes, not as the host has: 900 processes made a whole scan 300 ms on a busy box)."""
    if parents is None:
        walked = _walk_down(pid)
        if walked is not None:
            return walked
        parents = parent_map()
    children_of: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children_of.setdefault(parent, []).append(child)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child in children_of.get(current, []):
            found.append(child)
            frontier.append(child)
    return found


def _walk_down(pid: int) -> list[int] | None:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = children(frontier.pop())
        if below is None:
            return None
        found += below
        frontier += below
    return found


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def uss_kb(pid: int) -> int:
    """Unique set size (private clean + private dirty) in kB; 0 if the process is gone."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def tree_uss_kb(pid: int) -> int:
    return sum(uss_kb(p) for p in [pid, *descendants(pid)])


def memory_kb(pid: int) -> tuple[int, int, int]:
    """Proportional set size (each shared page split among the processes mapping it), unique
    set size and swapped-out PSS (``SwapPss``: swap shared with forks split the same way), in
    kB, from one read of ``smaps_rollup``; (0, 0, 0) if the process is gone."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0, 0, 0
    pss = uss = swap = 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith(("Private_Clean:", "Private_Dirty:")):
            uss += int(line.split()[1])
        elif line.startswith("SwapPss:"):
            swap = int(line.split()[1])
    return pss, uss, swap


def _meminfo_kb(field: str) -> int | None:
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def mem_available_kb() -> int | None:
    return _meminfo_kb("MemAvailable:")


def mem_total_kb() -> int | None:
    return _meminfo_kb("MemTotal:")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (children first gathered, then killed)."""
    tree = [pid, *descendants(pid)]
    signal_all(tree, signal.SIGKILL)


def ns_pid(pid: int) -> int | None:
    """The pid of a host process as its own (innermost) pid namespace sees it."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def host_pid(launcher: int, inner_pid: int) -> int | None:
    """The host pid of the process below ``launcher`` that its pid namespace calls
    ``inner_pid`` (the same pid when there is no pid namespace)."""
    for pid in descendants(launcher):
        if ns_pid(pid) == inner_pid:
            return pid
    return None


def with_argument(argument: str) -> list[int]:
    """Processes whose command line has this exact argument (e.g. a template script's path)."""
    wanted = argument.encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in args:
            found.append(int(entry.name))
    return found
