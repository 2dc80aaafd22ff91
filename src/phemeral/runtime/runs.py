"""One folder of runtime state per platform process, so two can share a data dir for a moment.

A data plane keeps what identifies its app processes under ``{data_dir}/runtime/runs/<run>/``
(``<run>`` is ``<pid>-<start time>``): the records of launched process trees (`Records`),
the overlay views (`AppViews`) and its copy of the template script; its cgroups carry the run in
their names (`cgroup_prefix`). Nothing there is shared with another run, so:

- a platform that starts replaces what a dead run left (processes, cgroups, mounts, folder) in
  the background, after it already serves: nothing of its own can collide with it;
- during an upgrade (`phemeral.dataplane.handover`) the new process starts its apps while the
  old one still serves with its own, and replaces the old run's leftovers once it exited
  (`wait_and_replace`): normally nothing, as the old process stops its apps itself.

Data dirs written before runs existed kept the same things directly under ``runtime/``
(``records/``, ``views/``, ``zygote.py``, cgroups ``rt<digest>-…``): `replace_legacy` clears them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from pathlib import Path

from phemeral.runtime import procs
from phemeral.runtime.appview import AppViews
from phemeral.runtime.records import Records

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # how often a live run's process is checked while waiting for its exit


def current_run() -> str:
    pid = os.getpid()
    return f"{pid}-{procs.start_time(pid)}"


def runs_dir(state_dir: Path) -> Path:
    return state_dir / "runs"


def cgroup_prefix(data_dir: Path, run: str | None) -> str:
    """Names of the cgroups of ``run`` (None: the layout before runs) start with this."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    return f"rt{digest}-" if run is None else f"rt{digest}r{run}-"


def alive(run: str) -> bool:
    """Whether the process that owns ``run`` still runs (same pid, same start time)."""
    pid, _, started = run.partition("-")
    if not pid.isdigit() or not started.isdigit():
        return False
    return running(int(pid), int(started))


def running(pid: int, started: int) -> bool:
    """Whether process ``pid`` started at ``started`` runs (an exited one not yet reaped, a
    zombie, does not)."""
    fields = procs.stat_fields(pid)
    return (
        fields is not None
        and len(fields) > 19
        and fields[0] not in ("Z", "X")
        and int(fields[19]) == started
    )


def others(state_dir: Path, mine: str) -> list[str]:
    """The runs with a folder here, except ``mine``."""
    try:
        return sorted(p.name for p in runs_dir(state_dir).iterdir() if p.name != mine)
    except OSError:
        return []


def replace(state_dir: Path, data_dir: Path, run: str, cgroups: bool) -> None:
    """Kill what ``run`` left running, remove its cgroups and mounts, then its folder."""
    folder = runs_dir(state_dir) / run
    Records(folder).replace_leftovers(cgroups, cgroup_prefix(data_dir, run), folder / "zygote.py")
    AppViews(folder / "views", enabled=True).clean()
    shutil.rmtree(folder, ignore_errors=True)


def replace_legacy(state_dir: Path, data_dir: Path, cgroups: bool) -> None:
    """The same for a data dir written before runs: ``runtime/records``, ``views``, cgroups."""
    zygote = state_dir / "zygote.py"
    if not (state_dir / "records").is_dir() and not zygote.exists():
        return
    Records(state_dir).replace_leftovers(cgroups, cgroup_prefix(data_dir, None), zygote)
    AppViews(state_dir / "views", enabled=True).clean()
    shutil.rmtree(state_dir / "records", ignore_errors=True)
    with contextlib.suppress(OSError):
        zygote.unlink()


async def wait_and_replace(state_dir: Path, data_dir: Path, run: str, cgroups: bool) -> None:
    """Replace ``run`` once its process is gone (at once when it already is)."""
    while alive(run):
        await asyncio.sleep(POLL_INTERVAL)
    try:
        await asyncio.to_thread(replace, state_dir, data_dir, run, cgroups)
    except Exception:
        log.exception("could not replace what the run %s left", run)
