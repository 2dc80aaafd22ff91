"""Promotion: the rule that decides whether a finished build becomes current, and the current
pointer itself (every move a `promotions` row: who, when, from, to, why)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane, now
from phemeral.deploys.routing import publish
from phemeral.errors import Conflict
from phemeral.models import DeploymentStatus, TriggerKind
from phemeral.store.schema import Deployment, Environment, Promotion
from phemeral.store.views import get_deployment


def should_promote(
    trigger: str, promote_on_success: bool, push_seq: int | None, promoted_push_seq: int
) -> bool:
    """Manual: as asked. Push: only if newer than the push that made the current deployment."""
    if trigger == TriggerKind.PUSH:
        return push_seq is not None and push_seq > promoted_push_seq
    return promote_on_success


def promote(cp: ControlPlane, deployment_id: str, actor: str, reason: str | None) -> Promotion:
    """Make any successful deployment current on its environment (this is also rollback)."""
    with cp.store.write() as s:
        d = get_deployment(s, deployment_id)
        env = s.get_one(Environment, d.environment_id, with_for_update=True)
        if d.status != DeploymentStatus.SUCCESSFUL:
            raise Conflict(f"deployment {d.id} is {d.status}; only successful ones can be promoted")
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
