"""What each dormant deployment keeps, and when each one last served: the figures the
runtime's budgets and warming order by (a part of `Runtime`).

The idle cost of a dormant deployment is measured by the idle sweep, off the event loop
(`footprint.measure`), at most `SAMPLES_PER_SWEEP` per pass and again after `SAMPLE_INTERVAL`
s or a use; when each deployment last served is noted from its last request, and both are
saved to ``usage.json`` (`usage`), so that a restarted runtime can order the templates to warm
again and estimate what each keeps before it is measured.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from phemeral.runtime.deployment import DeploymentRuntime, Supervision, is_dormant
from phemeral.runtime.footprint import IdleCost, Kept, kept, measure
from phemeral.runtime.idle import DEFAULT_SHARED_KB, DEFAULT_TEMPLATE_KB, WarmCandidate
from phemeral.runtime.sharing import SharedTemplates
from phemeral.runtime.template import TemplateProcess
from phemeral.runtime.usage import SAVE_INTERVAL, Usage, UsageFile

SAMPLE_INTERVAL = 30.0  # a dormant deployment's idle cost is measured again after this many s
SAMPLES_PER_SWEEP = 64  # measured at most per sweep (the rest wait for the next ones)


@dataclass(frozen=True)
class IdleSample:
    """A dormant deployment's measured idle cost, and of which template (a new one is measured
    again)."""

    template: TemplateProcess
    at: float  # runtime clock
    cost: IdleCost


class Ledger:
    """Idle costs of dormant deployments and when each last served (``usage.json``)."""

    def __init__(self, sup: Supervision, sharing: SharedTemplates, usage_file: UsageFile) -> None:
        self.sup = sup
        self.sharing = sharing
        self.usage_file = usage_file
        self.samples: dict[str, IdleSample] = {}  # idle cost of dormant deployments
        self.usage: dict[str, Usage] = {}  # when each deployment last served (wall clock)
        self._seen: dict[str, float] = {}  # last_request_at already in ``usage``
        self._unmeasured: set[str] = set()  # used since its template's memory was measured
        self._dirty = False
        self._saved_at = float("-inf")

    async def load(self) -> None:
        self.usage = await asyncio.to_thread(self.usage_file.load)

    def learned_imports(self, deployment_id: str) -> list[str]:
        """What its servers imported after their fork, as saved before this start."""
        used = self.usage.get(deployment_id)
        return list(used.imports) if used is not None else []

    def forget(self, deployment_id: str) -> None:
        """A retired deployment: nothing of it is kept."""
        self.samples.pop(deployment_id, None)
        if self.usage.pop(deployment_id, None) is not None:
            self._dirty = True

    def forget_sample(self, deployment_id: str) -> None:
        """What it keeps changed: measured again at the next sweep."""
        self.samples.pop(deployment_id, None)

    def cost(self, dep: DeploymentRuntime) -> IdleCost | None:
        """Its idle cost as measured with its current template (None: not yet)."""
        sample = self.samples.get(dep.release.deployment_id)
        if sample is None or dep.template is None or sample.template is not dep.template:
            return None
        return sample.cost

    def record(self, now: float, *, force: bool = False, save: bool = True) -> None:
        """Note when each deployment last served (what its dormant template holds is noted by
        `sample`); save ``usage.json`` when something changed (at most every `SAVE_INTERVAL`
        s, unless forced)."""
        wall = time.time()
        for did, dep in self.sup.deployments.items():
            if dep.last_request_at > 0 and self._seen.get(did) != dep.last_request_at:
                self._seen[did] = dep.last_request_at
                old = self.usage.get(did, Usage(None))
                used = wall - max(0.0, now - dep.last_request_at)
                self.usage[did] = replace(old, last_used=used)
                self._unmeasured.add(did)
                self._dirty = True
            # Kept with its use (a deployment never used gets no entry: none would be warmed).
            saved, learned = self.usage.get(did), tuple(dep.learned_imports)
            if saved is not None and learned and learned != saved.imports:
                self.usage[did] = replace(saved, imports=learned)
                self._dirty = True
        if not save or not self._dirty:
            return
        if not force and now - self._saved_at < SAVE_INTERVAL:
            return
        self.usage_file.save(self.usage)
        self._dirty = False
        self._saved_at = now

    async def sample(self, now: float) -> None:
        """Measure (in a thread) the dormant deployments never measured with their current
        template, or not for `SAMPLE_INTERVAL` s; at most `SAMPLES_PER_SWEEP` per pass."""
        deployments = self.sup.deployments
        dormant = [d for d in deployments.values() if is_dormant(d)]
        for did in [d for d in self.samples if d not in deployments]:
            del self.samples[did]
        due: list[tuple[float, DeploymentRuntime]] = []
        for dep in dormant:
            did = dep.release.deployment_id
            sample = self.samples.get(did)
            used = did in self._unmeasured and not dep.needs_refresh  # since last measured
            if sample is None or sample.template is not dep.template or used:
                due.append((float("-inf"), dep))
            elif now - sample.at >= SAMPLE_INTERVAL:
                due.append((sample.at, dep))
        if not due:
            return
        due.sort(key=lambda item: item[0])
        what: dict[str, Kept] = {}
        templates: dict[str, TemplateProcess] = {}
        for _, dep in due[:SAMPLES_PER_SWEEP]:
            found = kept(dep, self.sharing)
            if found is not None and dep.template is not None:
                what[dep.release.deployment_id] = found
                templates[dep.release.deployment_id] = dep.template
        costs = await asyncio.to_thread(measure, what)
        for did, cost in costs.items():
            now_dep = deployments.get(did)
            if (
                now_dep is None
                or now_dep.template is not templates[did]
                or now_dep.instance is not None
            ):
                continue  # woke or changed meanwhile: the figure is not of its dormant state
            if now_dep.hot_learning is templates[did]:
                # What it wrote out to learn its hot set is still in memory (the swap cache)
                # until its next wake maps it back: resident, as its tier says.
                swapped = cost.own_swap_kb
                cost = replace(
                    cost,
                    own_pss_kb=cost.own_pss_kb + swapped,
                    own_uss_kb=cost.own_uss_kb + swapped,
                    own_swap_kb=0,
                )
            self.samples[did] = IdleSample(templates[did], now, cost)
            if did in self._unmeasured and not now_dep.needs_refresh:
                self._unmeasured.discard(did)
                old = self.usage.get(did, Usage(None))
                self.usage[did] = replace(
                    old,
                    memory_kb=cost.own_pss_kb,
                    group=now_dep.shared_key,
                    group_kb=cost.shared_pss_kb if now_dep.shared_key is not None else None,
                )
                self._dirty = True

    def estimate_kb(self, dep: DeploymentRuntime) -> int:
        """What a dormant deployment keeps: measured, else as last measured (``usage.json``),
        else the defaults."""
        did = dep.release.deployment_id
        sample = self.samples.get(did)
        if sample is not None and sample.template is dep.template:
            return sample.cost.pss_kb
        used = self.usage.get(did)
        own = (used.memory_kb if used is not None else None) or DEFAULT_TEMPLATE_KB
        if dep.shared_key is None:
            return own
        shared = self.sharing.get(dep.shared_key)
        users = len(shared.users) if shared is not None else 1
        group_kb = (used.group_kb if used is not None else None) or DEFAULT_SHARED_KB
        return own + group_kb // max(1, users)

    def last_used(self, dep: DeploymentRuntime, now: float) -> float:
        """When it last served, on the runtime's clock: its last request here, else the last
        one recorded before this start (``usage.json``), else when its template was loaded."""
        if dep.last_request_at > 0:
            return dep.last_request_at
        used = self.usage.get(dep.release.deployment_id)
        if used is not None and used.last_used is not None:
            return now - max(0.0, time.time() - used.last_used)
        return dep.dormant_since if dep.dormant_since is not None else now

    def warm_candidates(self, current: set[str], share: bool) -> list[WarmCandidate]:
        """Registered deployments with a template tier that were used before, or are current."""
        out = []
        for did, dep in self.sup.deployments.items():
            used = self.usage.get(did)
            if dep.server is None or (used is None and did not in current):
                continue
            release = dep.release
            group = None
            if share and release.lock_hash:
                group = warm_group(
                    f"{release.project}:{release.lock_hash}:{release.python_version}", used
                )
            out.append(
                WarmCandidate(
                    did,
                    used.last_used if used is not None else None,
                    (used.memory_kb if used is not None else None) or DEFAULT_TEMPLATE_KB,
                    group,
                    (used.group_kb if used is not None else None) or DEFAULT_SHARED_KB,
                )
            )
        return out


def warm_group(group: str, used: Usage | None) -> str | None:
    """The framework template a restart's warming counts for a deployment of a shareable
    dependency set (``group``): none when its template was last measured as one of its own
    (a project's only deployment gets one: no shared template stays beside it)."""
    if used is not None and used.memory_kb and used.group is None:
        return None
    return group
