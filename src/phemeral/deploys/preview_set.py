"""The project-level variable set a preview environment starts from, and the fork rule."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane
from phemeral.store.schema import Environment, Preview, PreviewVar


def unapproved_fork(s: Session, env: Environment) -> bool:
    """True for a fork's preview nobody approved: it receives no variables or credentials."""
    preview = s.get(Preview, env.id)
    return preview is not None and preview.fork and preview.approved_by is None


def preview_variables(cp: ControlPlane, s: Session, env: Environment) -> dict[str, str] | None:
    """The preview variable set of ``env``'s project, or None when ``env`` is no preview."""
    if s.get(Preview, env.id) is None:
        return None
    rows = s.scalars(
        select(PreviewVar).where(PreviewVar.project_id == env.project_id).order_by(PreviewVar.key)
    )
    return {row.key: cp.box.decrypt(row.value) for row in rows}
