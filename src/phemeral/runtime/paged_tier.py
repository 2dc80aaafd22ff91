"""The runtime's paged tier: when dormant templates are paged out, their hot sets kept in
within the hot-set budget, and a wake from swap (the acting part; `paging` does the syscalls,
`idle.templates_to_page_out` and `idle.hot_sets_to_keep` decide).

A part of `Runtime` (as `instances.Instances` and `app_template.AppTemplates` are): it runs on
the runtime's sweep and wakes, over the runtime's deployments.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from phemeral.models import Upstream
from phemeral.runtime import paging, procs
from phemeral.runtime.deployment import DeploymentRuntime, Supervision, is_dormant
from phemeral.runtime.footprint import Kept, kept, own_pids
from phemeral.runtime.idle import HotSet, PageCandidate, hot_sets_to_keep, templates_to_page_out
from phemeral.runtime.instances import Instances
from phemeral.runtime.sharing import SharedTemplates
from phemeral.settings import Settings

log = logging.getLogger("phemeral.runtime")

PAGE_OUTS_PER_SWEEP = 8  # templates paged out at most per sweep (each takes ms of kernel time)
LEARNING_PER_SWEEP = 4  # templates written out to learn their hot sets, at most per sweep
SWAP_RESERVE_KB = 64 * 1024  # swap the paged tier leaves free (for whatever else swaps)
PAGED_RECLAIM_AFTER = 1.0  # s after a page-out: its writes are done, its swap cache is freed
LOCK_SLACK = 1 << 20  # bytes of memlock limit above a hot set (ranges rounded to pages)
# Background paging keeps the host's swap traffic under this (bytes/s; `paging.Pacer`), and
# waits while a wake is under way (at most PACE_HOLD s at a time): a wake's reads must be
# submitted into the same disk queue, and behind gigabytes of page-outs they waited seconds.
BACKGROUND_SWAP_RATE = 64 << 20
PACE_HOLD = 2.0
FOREGROUND_AFTER_WAKE = 0.5  # s after a wake began that background paging still waits
# A wake waits this long at most for the submission of its reads (`paging.read_back`): when
# the disk's queue is full the submission itself blocks, and the fork does better to go on,
# asking for its pages as it touches them, while the rest are still being submitted.
READ_BACK_WAIT = 0.05

HotSetOf = tuple[int, list[tuple[int, int]]]  # a template's host pid, and its hot set
P = ParamSpec("P")
T = TypeVar("T")


def hot_set_budget_kb(settings: Settings) -> int:
    """What the hot sets of paged templates may keep together (kB): ``hot_set_budget_mb``,
    else a quarter of the host's memory."""
    if settings.hot_set_budget_mb is not None:
        return settings.hot_set_budget_mb * 1024
    total = procs.mem_total_kb()
    return total // 4 if total is not None else 256 * 1024


async def swap_room_kb() -> int:
    """Free swap the paged tier may still fill (kB; ≤ 0: none)."""
    return await asyncio.to_thread(paging.swap_free_kb) - SWAP_RESERVE_KB


class PagedTier:
    """Pages dormant templates out and wakes them from swap."""

    def __init__(
        self,
        sup: Supervision,
        sharing: SharedTemplates,
        instances: Instances,
        *,
        forget_sample: Callable[[str], None],
        dormant: Callable[[], list[DeploymentRuntime]],
        last_used: Callable[[DeploymentRuntime, float], float],
        idle_estimate_kb: Callable[[DeploymentRuntime], int],
    ) -> None:
        self.sup = sup
        self.sharing = sharing
        self.instances = instances
        self.forget_sample = forget_sample  # a deployment's idle cost changed: measure again
        self.dormant = dormant
        self.last_used = last_used
        self.idle_estimate_kb = idle_estimate_kb
        self.budget_kb = hot_set_budget_kb(sup.settings)
        self._swap_full_logged = False
        self._lock_short_logged = False
        # Background paging (page-outs, reclaims, hot sets read back or out, the learning
        # write-out) runs on one thread of its own with the idle I/O class: its swap traffic
        # (hundreds of MB after a mass page-out) neither queues ahead of a wake's reads nor
        # holds the threads a wake's own blocking calls run on.
        self._background = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="paging", initializer=paging.lower_io_priority
        )
        self.foreground_until = 0.0  # time.monotonic(): background paging waits until then
        self.pacer = paging.Pacer(
            BACKGROUND_SWAP_RATE,
            lambda: time.monotonic() < self.foreground_until,
            hold=PACE_HOLD,
        )
        # A wake's reads are submitted on threads of their own: never behind another blocking
        # call of the runtime's (the default executor measures memory, learns hot sets).
        self._foreground = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wake-reads")

    def note_wake(self) -> None:
        """A wake begins: background paging steps aside for a moment (`paging.Pacer`)."""
        self.foreground_until = max(self.foreground_until, time.monotonic() + FOREGROUND_AFTER_WAKE)

    async def _quietly(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` on the background paging thread (idle I/O class)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._background, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the paging threads (what they run finishes; nothing queued starts)."""
        self._background.shutdown(wait=False, cancel_futures=True)
        self._foreground.shutdown(wait=False, cancel_futures=True)

    async def sweep(self, now: float) -> None:
        """Page out the memory of the templates unused for ``page_out_after`` s (`paging`);
        reclaim what the last ones left in the swap cache; keep the hot sets in budget."""
        after = self.sup.settings.page_out_after
        if after <= 0:
            return
        await self.reclaim()
        await self.start_learning()
        candidates = []
        for dep in self.dormant():
            if dep.shared_key is not None:
                continue  # forked from a shared template: it gets one of its own first
            paged_at = dep.paged_at if dep.paged else None
            did, last_used = dep.release.deployment_id, self.last_used(dep, now)
            # what paging it out writes, about: its PSS as last measured
            estimate = self.idle_estimate_kb(dep)
            candidates.append(PageCandidate(did, last_used, paged_at, estimate))
        if not candidates:
            return
        free_kb = await asyncio.to_thread(paging.swap_free_kb)
        plan = templates_to_page_out(
            candidates, now, after, PAGE_OUTS_PER_SWEEP, free_kb, SWAP_RESERVE_KB
        )
        if plan.swap_short and free_kb > 0 and not self._swap_full_logged:
            self._swap_full_logged = True
            log.warning(
                "swap is full: dormant templates stay resident (the template budget and "
                "memory pressure still apply); PHEMERAL_SWAP_FILE_MB sets its size"
            )
        for deployment_id in plan.deployment_ids:
            found = self.sup.deployments.get(deployment_id)
            if found is not None:
                await self.page_out(found)

    async def start_learning(self) -> None:
        """Dormant templates of their own whose hot set misses what their wakes read (none
        learned yet, or only a resident one's written pages): write their anonymous pages out
        once (`_write_out_once`, a few per sweep). They stay in the swap cache, so
        the next wake maps back what it touches, and what it touched, reads included, becomes
        the hot set when it stops (`Instances`); the rest is mapped back then."""
        if self.sup.settings.hot_set_mb <= 0:
            return
        due = [
            dep
            for dep in self.dormant()
            if dep.shared_key is None
            and not dep.paged
            and dep.template is not None
            and dep.hot_learning is not dep.template
            and dep.learned_from is not dep.template  # once: a busy one may pass hot_set_mb
            and (dep.hot_template is not dep.template or dep.hot_how == "written")
        ][:LEARNING_PER_SWEEP]
        if not due or await asyncio.to_thread(paging.swap_free_kb) <= SWAP_RESERVE_KB:
            return
        for dep in due:
            found = kept(dep, self.sharing) if is_dormant(dep) else None
            template = dep.template
            if found is None or template is None or found.own_cgroup is None:
                continue
            await asyncio.to_thread(found.own_cgroup.allow_swap)
            written = await self._quietly(_write_out_once, found, self.pacer)
            if written and dep.template is template and is_dormant(dep):
                # Its figure stands: what it wrote out stays in the swap cache, counted as
                # resident until its next wake maps it back (`Ledger.sample`).
                dep.hot_learning = template

    async def page_out(self, dep: DeploymentRuntime) -> int:
        """Page out a dormant template's memory now; the bytes the kernel went over (0: not
        dormant). Without free swap only file pages can go."""
        found = kept(dep, self.sharing) if is_dormant(dep) else None
        if found is None or dep.template is None:
            return 0
        template = dep.template
        if found.own_cgroup is not None:
            await asyncio.to_thread(found.own_cgroup.allow_swap)
        await self._unlock(dep)  # the hot set goes too: it may be learned anew since
        done = await self._quietly(lambda: paging.page_out(own_pids(found), self.pacer))
        if dep.template is template and template.alive:
            dep.paged_template, dep.paged_at = template, self.sup.clock()
            dep.hot_learning = None  # its next wake learns as a paged one
            dep.hot_in = False
            dep.paged_reclaim_due = time.monotonic() + PAGED_RECLAIM_AFTER
            self.forget_sample(dep.release.deployment_id)
            self.sup.system(dep, "template paged out to swap (paged tier): a wake reads it back")
        return done

    @staticmethod
    def hot_set(dep: DeploymentRuntime) -> HotSetOf | None:
        """The hot set learned for its current template, and that template's host pid."""
        if dep.hot_set and dep.hot_pid and dep.hot_template is dep.template:
            return dep.hot_pid, dep.hot_set
        return None

    async def wake(self, dep: DeploymentRuntime) -> Upstream:
        """Wake from a paged template. With its hot set in memory the fork starts with what
        it needs. Otherwise the reads are submitted first, in one batch (`paging.read_back`,
        ms): of its hot set when one is known (kept out by the hot-set budget), else of its
        whole memory (its first wake since the page-out, or ``hot_set_mb`` 0). The template
        and its fork then wait on reads in flight instead of asking for their pages one
        fault at a time (2-3× faster)."""
        found = kept(dep, self.sharing)
        hot = self.hot_set(dep)
        if found is not None and not (dep.hot_in and hot):  # else it is in
            if hot is not None:
                pid, ranges = hot
                submit: Callable[[], int] = functools.partial(paging.read_back, pid, ranges)
            else:
                pids = own_pids(found)
                submit = lambda: sum(paging.read_back(pid) for pid in pids)  # noqa: E731
            reads = asyncio.get_running_loop().run_in_executor(self._foreground, submit)
            reads.add_done_callback(_log_failure)
            done, _ = await asyncio.wait({reads}, timeout=READ_BACK_WAIT)
            if not done and dep.wake_trace is not None:
                dep.wake_trace.note("read_back_cut", READ_BACK_WAIT * 1000)
        if dep.wake_trace is not None:
            dep.wake_trace.mark("read_back")
        return await self.instances.wake(dep)

    async def reclaim(self) -> None:
        """Free the swap cache of templates paged out a moment ago: their pages are written
        (their cgroup reclaims them: no copy stays in memory). Not while one runs. Then the
        hot sets within the hot-set budget are read back in, and those past it paged out."""
        now = time.monotonic()
        for dep in self.dormant():
            due = dep.paged_reclaim_due
            if due is None or now < due or not dep.paged or dep.cgroup is None:
                continue
            dep.paged_reclaim_due = None
            if dep.shared_key is None:  # its cgroup holds its own template alone
                await self._quietly(dep.cgroup.reclaim)
                self.forget_sample(dep.release.deployment_id)
        await self._keep_hot_sets()

    async def reclaim_now(self) -> None:
        """`reclaim` without waiting for the writes' second (bench, tests)."""
        for dep in self.dormant():
            if dep.paged_reclaim_due is not None:
                dep.paged_reclaim_due = 0.0
        await self.reclaim()

    async def _keep_hot_sets(self) -> None:
        """Read back the hot sets `hot_sets_to_keep` chooses (mapped in their templates, so
        the next fork starts with them) and page out again those it no longer does."""
        clock_now = self.sup.clock()
        held: dict[str, DeploymentRuntime] = {}
        for dep in self.dormant():
            if dep.paged and dep.paged_reclaim_due is None and self.hot_set(dep) is not None:
                held[dep.release.deployment_id] = dep
        if not held:
            return
        keep = hot_sets_to_keep(
            (HotSet(did, self.last_used(dep, clock_now), dep.hot_kb) for did, dep in held.items()),
            self.budget_kb,
        )
        for did, dep in held.items():
            hot = self.hot_set(dep)
            if hot is None or (did in keep) == dep.hot_in:
                continue
            pid, ranges = hot
            if did in keep:  # what its forks touch: back in, mapped, and kept there
                await self._quietly(paging.bring_in, pid, ranges, pace=self.pacer)
                await self._lock(dep, pid, ranges)
            else:  # over the budget: out again, and no copy left in memory
                await self._unlock(dep)
                await self._quietly(paging.page_out_process, pid, ranges, self.pacer)
                if dep.cgroup is not None and dep.shared_key is None:
                    dep.paged_reclaim_due = time.monotonic() + PAGED_RECLAIM_AFTER
            dep.hot_in = did in keep
            self.forget_sample(did)

    async def _lock(self, dep: DeploymentRuntime, pid: int, ranges: list[tuple[int, int]]) -> None:
        """Lock the hot set in the template's memory (``mlock``, by the template itself):
        pages it keeps in are not the kernel's to reclaim, nor a host's proactive pageout's
        (which takes what is unused for a minute, as a hot set between wakes is). Its
        ``RLIMIT_MEMLOCK`` is raised to the hot set first (root with ``CAP_SYS_RESOURCE``;
        without it, what the inherited limit holds is locked, anonymous pages first)."""
        template = dep.template
        if template is None:
            return
        # Anonymous pages first: with a limit that holds only part of it, those are the ones a
        # wake would read back from swap (file pages come back from the page cache).
        anonymous = paging.within(ranges, paging.anonymous(pid))
        ranges = anonymous + paging.within(ranges, paging.file_backed(pid))
        size = sum(length for _, length in ranges)
        try:
            _, hard = resource.prlimit(pid, resource.RLIMIT_MEMLOCK)
            if hard != resource.RLIM_INFINITY and hard < size + LOCK_SLACK:
                limit = size + LOCK_SLACK
                resource.prlimit(pid, resource.RLIMIT_MEMLOCK, (limit, limit))
        except (OSError, ValueError) as exc:
            log.debug("could not raise the memlock limit of %s: %s", pid, exc)
        locked = await template.lock(ranges, True)
        dep.hot_locked = ranges if locked else []
        if locked < size and not self._lock_short_logged:
            self._lock_short_logged = True
            log.warning(
                "a hot set could be locked in memory only in part (%d of %d bytes): the "
                "kernel may page the rest out",
                locked,
                size,
            )

    async def _unlock(self, dep: DeploymentRuntime) -> None:
        locked, dep.hot_locked = dep.hot_locked, []
        if locked and dep.template is not None:
            await dep.template.lock(locked, False)


def _log_failure(reads: asyncio.Future[int]) -> None:
    if not reads.cancelled() and reads.exception() is not None:
        log.warning("reading a paged template back failed: %s", reads.exception())


def _write_out_once(found: Kept, pace: paging.Pace | None = None) -> int:
    """The anonymous pages of the processes a template keeps alone, written out to swap and
    unmapped, its file pages left alone (blocking): they stay in the swap cache until memory
    pressure or a reclaim frees them, and a page the next fork or the template touches is
    mapped back from there (a minor fault, no read). What is present after that wake is what
    it touched, reads included, which a resident template's pagemap cannot tell otherwise
    (`paging.written_ranges` sees writes only)."""
    return sum(paging.page_out_process(pid, paging.anonymous(pid), pace) for pid in own_pids(found))
