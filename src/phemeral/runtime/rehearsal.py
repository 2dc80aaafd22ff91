"""Rehearsals: one request that no user sent, so that the first one a user sends after a long
idle is fast.

A paged template wakes in about 20 ms when its hot set is known (the pages a wake touches,
`paging`), and in 50-90 ms when the whole memory, or a hot set that misses what a wake reads,
must be read back. A hot set is learned from a wake (`Instances._learn_hot_set`): after a
platform restart, a deploy, or for a deployment not woken since its template's memory was
written out, none is known, and the first user to come back after a quiet night would pay
for it. So the runtime rehearses such a template once, in the background: a wake like any
other, one ``GET`` of the release's health-check path (``User-Agent: phemeral-rehearsal``,
as the boot check sends one), and a stop, which learns the hot set. A paged template is paged
out again at once (its hot set kept within the hot-set budget, `PagedTier`).

A rehearsal is not a use: it leaves the deployment's last use (what the budgets order by), its
last wake figures and the wake statistics as they were. A user's request that arrives meanwhile
shares the instance, which is then left to the idle sweep. One rehearsal runs at a time, the
most recently used deployments first (`idle.rehearsals_due`); ``Settings.rehearse`` turns them
off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from phemeral.errors import PhemeralError
from phemeral.models import Upstream
from phemeral.runtime.bootcheck import probe_http
from phemeral.runtime.deployment import DeploymentRuntime, Supervision, is_dormant
from phemeral.runtime.idle import Rehearsal, rehearsals_due
from phemeral.runtime.instances import Instances
from phemeral.runtime.paged_tier import PagedTier

log = logging.getLogger("phemeral.runtime")

# s unused before a rehearsal: a user's wake soon after a deploy teaches the same, and the
# paged tier's default wait is 300 s, so most are rehearsed before their first page-out
REHEARSE_QUIET = 60.0
REHEARSALS_PER_SWEEP = 4  # at most, one after the other
REHEARSAL_TIMEOUT = 20.0  # s for its wake and its answer
AGENT = "phemeral-rehearsal"


class Rehearsals:
    """Rehearses dormant templates whose hot set a wake would miss (a part of `Runtime`)."""

    def __init__(
        self,
        sup: Supervision,
        instances: Instances,
        paged: PagedTier,
        *,
        ensure_running: Callable[[str], Awaitable[Upstream]],
        forget_answer: Callable[[str], None],
        dormant: Callable[[], list[DeploymentRuntime]],
        last_used: Callable[[DeploymentRuntime, float], float],
    ) -> None:
        self.sup = sup
        self.instances = instances
        self.paged = paged
        self.ensure_running = ensure_running
        self.forget_answer = forget_answer  # its wake's first answer is not a user's
        self.dormant = dormant
        self.last_used = last_used
        self.quiet = REHEARSE_QUIET
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        settings = self.sup.settings
        return settings.rehearse and settings.page_out_after > 0 and settings.hot_set_mb > 0

    @staticmethod
    def needs(dep: DeploymentRuntime) -> bool:
        """Whether a wake of it now would miss its hot set, and no rehearsal ran for it: a
        resident template whose memory was written out to learn it (`PagedTier.start_learning`),
        or a paged one without a hot set, or with one of a resident template's writes only."""
        template = dep.template
        if template is None or dep.shared_key is not None or dep.rehearsed is template:
            return False
        if not is_dormant(dep):
            return False
        if dep.paged:
            return PagedTier.hot_set(dep) is None or dep.hot_how == "written"
        return dep.hot_learning is template

    def sweep(self, now: float) -> None:
        """Start the next rehearsals in the background, unless some still run."""
        if not self.enabled or (self._task is not None and not self._task.done()):
            return
        due = rehearsals_due(
            (
                Rehearsal(dep.release.deployment_id, self.last_used(dep, now))
                for dep in self.dormant()
                if self.needs(dep)
            ),
            now,
            self.quiet,
            REHEARSALS_PER_SWEEP,
        )
        if due:
            self._task = asyncio.get_running_loop().create_task(self._run(due))

    async def idle(self) -> None:
        """Wait for the rehearsals under way (tests, bench)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, deployment_ids: list[str]) -> None:
        done = 0
        for did in deployment_ids:
            dep = self.sup.deployments.get(did)
            if dep is not None and self.needs(dep):
                try:
                    done += await self.rehearse(dep)
                except Exception:
                    log.exception("rehearsing %s failed", did)
        left = sum(self.needs(dep) for dep in self.dormant())
        log.info("rehearsed %d template(s); %d more to rehearse", done, left)

    async def rehearse(self, dep: DeploymentRuntime) -> bool:
        """Wake it, send it its health-check request, stop it (which learns its hot set); a
        paged one is paged out again. False when it could not be done (said in its log)."""
        template = dep.template
        did = dep.release.deployment_id
        dep.rehearsed = template
        paged = dep.paged
        used = dep.last_request_at
        dep.rehearsing = True
        dep.in_flight += 1  # not idle while the request is under way
        try:
            upstream = await asyncio.wait_for(self.ensure_running(did), REHEARSAL_TIMEOUT)
            host = f"{did}.{self.sup.settings.base_domain}"
            path = dep.release.health_check_path
            status = await probe_http(dep, upstream, REHEARSAL_TIMEOUT, host, path, AGENT)
        except (PhemeralError, OSError, TimeoutError) as exc:
            self.sup.system(
                dep, f"rehearsal failed ({exc or 'timed out'}): its next wake reads more"
            )
            return False
        finally:
            dep.rehearsing = False
            dep.in_flight -= 1
            self.forget_answer(did)
        self.sup.system(
            dep,
            f"rehearsal: GET {path} answered {status}, so a wake after a long idle reads back "
            "only what it needs",
        )
        if dep.last_request_at != used or dep.in_flight:
            return True  # a user's request came: the idle sweep stops it in time
        await self.instances.stop(dep, "rehearsal done")
        if paged and dep.template is template:
            await self.paged.page_out(dep)
        return True
