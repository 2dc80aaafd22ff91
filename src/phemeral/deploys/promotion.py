"""Promotion: the rule that decides whether a finished build becomes current, and the current
pointer itself (every move a `promotions` row: who, when, from, to, why)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane, now
from phemeral.deploys.routing import publish
from phemeral.errors import Conflict
from phemeral.models import CommitRelation, DeploymentStatus, TriggerKind
from phemeral.store.schema import Deployment, Environment, Promotion
from phemeral.store.views import get_deployment

SUCCEEDED = "push deployment succeeded"  # how the audit trail names an automatic move


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a finished deployment becomes current, and why (for the build log)."""

    promote: bool
    reason: str


def should_promote(
    trigger: str,
    promote_on_success: bool,
    push_seq: int | None,
    promoted_push_seq: int,
    *,
    current_commit: str | None = None,
    relation: CommitRelation | None = None,
) -> PromotionDecision:
    """Manual: as asked. Push: the commit graph decides; push times only between unrelated
    histories.

    ``relation`` is how the built commit relates to ``current_commit`` (the commit of the
    environment's current deployment), as the build found it in the repository:

    - no current deployment: it becomes current;
    - it descends from the current commit: it becomes current, whatever the clocks say;
    - it is an ancestor of the current commit (an older push delivered or built late): never
      automatically; a manual promote still can;
    - otherwise (same commit, unrelated histories after a force push, a commit the remote no
      longer has, a current deployment from an upload): the later push wins, by push sequence
      (GitHub's push time, after its parent push).
    """
    if trigger != TriggerKind.PUSH:
        why = "manual deploy" if promote_on_success else "deployed without promotion (--no-promote)"
        return PromotionDecision(promote_on_success, why)
    if push_seq is None:
        return PromotionDecision(False, "push without a sequence: not made current")
    short = (current_commit or "")[:12]
    if relation is CommitRelation.DESCENDANT:
        return PromotionDecision(
            True, f"{SUCCEEDED}: its commit descends from the current commit {short}"
        )
    if relation is CommitRelation.ANCESTOR:
        return PromotionDecision(
            False,
            f"its commit is an ancestor of the current commit {short} (an older push): "
            "not made current; promote it by hand to roll back",
        )
    later = push_seq > promoted_push_seq
    if relation is CommitRelation.UNRELATED:
        basis = f"its history is unrelated to the current commit {short} (a force push?)"
    elif relation is CommitRelation.UNKNOWN:
        basis = f"the current commit {short} is no longer in the repository"
    elif relation is CommitRelation.SAME:
        basis = f"it builds the current commit {short} again"
    elif current_commit is not None:
        basis = f"this build did not compare with the current commit {short}"
    elif promoted_push_seq == 0:
        return PromotionDecision(True, f"{SUCCEEDED} (the first push of this environment)")
    else:
        basis = "the current deployment has no commit to compare with"
    if later:
        return PromotionDecision(True, f"{SUCCEEDED}: {basis}; the later push wins")
    return PromotionDecision(False, f"{basis}; a later push is already current")


def promote(cp: ControlPlane, deployment_id: str, actor: str, reason: str | None) -> Promotion:
    """Make any successful deployment current on its environment (this is also rollback)."""
    with cp.store.write() as s:
        d = get_deployment(s, deployment_id)
        env = s.get_one(Environment, d.environment_id, with_for_update=True)
        if d.status != DeploymentStatus.SUCCESSFUL:
            raise Conflict(f"deployment {d.id} is {d.status}; only successful ones can be promoted")
        if d.collected_at is not None:
            raise Conflict(
                f"deployment {d.id}'s release was collected (retention keeps the newest, the "
                "current and the pinned ones); redeploy its source instead"
            )
        if env.current_deployment_id == d.id:
            raise Conflict(f"deployment {d.id} is already current on {env.name}")
        promotion = move_pointer(s, env, d, actor, reason or "promoted by hand")
    publish(cp)
    return promotion


def move_pointer(s: Session, env: Environment, d: Deployment, actor: str, reason: str) -> Promotion:
    promotion = Promotion(
        environment_id=env.id,
        from_deployment_id=env.current_deployment_id,
        to_deployment_id=d.id,
        actor=actor,
        reason=reason,
        created_at=now(),
    )
    s.add(promotion)
    env.current_deployment_id = d.id
    if d.push_seq is not None:
        env.promoted_push_seq = max(env.promoted_push_seq, d.push_seq)
    return promotion
