"""What a scaled-to-zero deployment keeps, and what that costs: PSS over every process it keeps.

`kept(dep, sharing)` is the one place that says which processes a dormant deployment keeps
(taken on the event loop, cheap: no ``/proc`` walk); `measure` reads their memory (off the
event loop: the idle sweep runs it in a thread and caches the result).

Today a dormant deployment on the template tier keeps:

- its own template: when launched alone, the processes of its cgroup (its sandbox's ``bwrap``
  processes and the python below them), or, without cgroups, its template's process tree; when
  forked from a shared template, that one process (its cgroup may for a moment also hold the
  template of its own being loaded to replace it: not kept yet);
- its share of its project's shared framework template (the processes of that template's
  cgroup, or its tree less the per-deployment templates forked from it), split evenly among
  the deployments using it, so the figures of a project's deployments add up to what the
  project keeps.

PSS already splits each page among the processes that map it (a fork's pages still shared
with its template count half in each), so adding PSS never counts a page twice. Network
namespaces keep no process. The deep tier keeps nothing. On the paged tier (`paging`) the
same processes keep most of their memory in swap: PSS counts what stays resident, and the swap
they hold is reported apart (``own_swap_kb``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from phemeral import sandbox
from phemeral.runtime import procs
from phemeral.runtime.deployment import DeploymentRuntime
from phemeral.runtime.sharing import SharedTemplates

MemoryReader = Callable[[int], tuple[int, int, int]]  # pid -> (PSS, USS, swap PSS) kB


@dataclass(frozen=True)
class Kept:
    """The processes a dormant deployment keeps: its own, and a template it shares."""

    own_cgroup: sandbox.Cgroup | None
    own_root: int | None  # host pid of its template (its tree, when there is no cgroup)
    own_only: bool = False  # its template's process alone (a fork), not its cgroup's
    shared_key: str | None = None
    shared_cgroup: sandbox.Cgroup | None = None
    shared_root: int | None = None
    shared_forks: tuple[int, ...] = ()  # host pids of the templates forked from the shared one
    shared_by: int = 1  # deployments the shared template's cost is split among


@dataclass(frozen=True)
class IdleCost:
    own_pss_kb: int
    own_uss_kb: int  # the memory only it holds (what stopping it would free at least)
    shared_pss_kb: int = 0  # the whole shared template's PSS
    shared_by: int = 1
    own_swap_kb: int = 0  # paged out to swap (`paging`): not resident, read back on a wake

    @property
    def pss_kb(self) -> int:
        """What the deployment keeps: its own PSS plus its even share of the shared template."""
        return self.own_pss_kb + self.shared_pss_kb // max(1, self.shared_by)


def kept(dep: DeploymentRuntime, sharing: SharedTemplates) -> Kept | None:
    """What ``dep`` keeps while dormant (None: nothing, the deep tier)."""
    template = dep.template
    if template is None or not template.alive:
        return None
    shared = sharing.get(dep.shared_key)
    if shared is None or not shared.template.alive:
        return Kept(dep.cgroup, template.host_pid)
    forks = []
    for did in shared.users:
        user = sharing.sup.deployments.get(did)
        if user is not None and user.template is not None and user.template.host_pid:
            forks.append(user.template.host_pid)
    return Kept(
        dep.cgroup,
        template.host_pid,
        True,
        shared.key,
        shared.cgroup,
        shared.template.host_pid,
        tuple(forks),
        max(1, len(shared.users)),
    )


def own_pids(k: Kept, finder: _Pids | None = None) -> list[int]:
    """The processes a deployment keeps alone (blocking: may walk ``/proc``)."""
    if k.own_only:
        return [k.own_root] if k.own_root else []
    return (finder or _Pids()).of(k.own_cgroup, k.own_root)


class _Pids:
    """Finds a template's processes: its cgroup's, else its process tree (``/proc`` read once)."""

    def __init__(self) -> None:
        self.parents: dict[int, int] | None = None

    def tree(self, root: int | None, skip: Iterable[int] = ()) -> list[int]:
        if root is None:
            return []
        if self.parents is None:
            self.parents = procs.parent_map()
        excluded = set()
        for pid in skip:
            excluded.update([pid, *procs.descendants(pid, self.parents)])
        return [p for p in [root, *procs.descendants(root, self.parents)] if p not in excluded]

    def of(
        self, cgroup: sandbox.Cgroup | None, root: int | None, skip: Iterable[int] = ()
    ) -> list[int]:
        if cgroup is not None:
            found = cgroup.pids()
            if found or root is None:
                return found
        return self.tree(root, skip)


def measure(kept_by: dict[str, Kept], read: MemoryReader = procs.memory_kb) -> dict[str, IdleCost]:
    """The idle cost of each deployment (blocking: reads ``/proc``; a shared template is read
    once however many of its deployments are measured)."""
    finder = _Pids()
    shared_pss: dict[str, int] = {}
    out: dict[str, IdleCost] = {}
    for did, k in kept_by.items():
        own = [read(pid) for pid in own_pids(k, finder)]
        pss = 0
        if k.shared_key is not None:
            if k.shared_key not in shared_pss:
                members = finder.of(k.shared_cgroup, k.shared_root, k.shared_forks)
                shared_pss[k.shared_key] = sum(read(pid)[0] for pid in members)
            pss = shared_pss[k.shared_key]
        out[did] = IdleCost(
            sum(p for p, _, _ in own),
            sum(u for _, u, _ in own),
            pss,
            k.shared_by if k.shared_key is not None else 1,
            sum(w for _, _, w in own),
        )
    return out
