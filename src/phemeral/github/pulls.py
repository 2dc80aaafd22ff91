"""Pull-request deliveries: what a verified ``pull_request`` event asks of a preview environment.

Pure: a decoded payload in, a value out. ``opened``/``reopened`` create (or resume) the preview
``pr-{number}`` and deploy its head; ``synchronize`` deploys the new head; ``closed`` (merged or
not) tears the preview's compute down. Every other action is ignored with its reason.

A pull request whose head lives in another repository (a fork) is flagged: its builds never
receive the project's variables or service credentials until someone with rights approves it,
which is GitHub's own rule for workflow runs from forks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
MAX_PR_NUMBER = 10**9


class PullAction(StrEnum):
    OPEN = "open"  # opened, reopened, ready_for_review
    SYNC = "sync"  # synchronize: a new head commit
    CLOSE = "close"  # closed, merged or not


_ACTIONS = {
    "opened": PullAction.OPEN,
    "reopened": PullAction.OPEN,
    "ready_for_review": PullAction.OPEN,
    "synchronize": PullAction.SYNC,
    "closed": PullAction.CLOSE,
}


@dataclass(frozen=True)
class PullRequestEvent:
    """One pull-request delivery that changes a preview."""

    delivery_id: str
    action: PullAction
    number: int
    head_sha: str
    head_ref: str
    head_repo: str | None  # owner/name of the head's repository (None: a deleted fork)
    base_repo: str | None
    base_ref: str
    sender: str | None
    merged: bool
    title: str | None

    @property
    def fork(self) -> bool:
        """True when the head is not in the base repository (never trusted with secrets)."""
        return (
            self.head_repo is None
            or (self.head_repo or "").lower() != (self.base_repo or "").lower()
        )


def preview_environment(number: int) -> str:
    """The preview environment's name for pull request ``number``."""
    return f"pr-{number}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _full_name(side: object) -> str | None:
    repo = side.get("repo") if isinstance(side, dict) else None
    return _text(repo.get("full_name")) if isinstance(repo, dict) else None


def parse_pull_request(
    delivery_id: str, data: Mapping[str, Any]
) -> PullRequestEvent | tuple[str, int]:
    """The event, or ``(reason, status)``: 202 for an action that changes nothing, 400 for a
    payload that cannot be understood."""
    action_name = _text(data.get("action"))
    if action_name is None:
        return "pull_request payload has no 'action'", 400
    action = _ACTIONS.get(action_name)
    if action is None:
        return f"pull_request action {action_name!r} does not change a preview", 202
    pr = data.get("pull_request")
    number = data.get("number", pr.get("number") if isinstance(pr, dict) else None)
    if not isinstance(pr, dict) or isinstance(number, bool) or not isinstance(number, int):
        return "pull_request payload has no pull request number", 400
    if not 0 < number < MAX_PR_NUMBER:
        return f"pull request number {number} is out of range", 400
    head, base = pr.get("head"), pr.get("base")
    if not isinstance(head, dict) or not isinstance(base, dict):
        return "pull_request payload has no head or base", 400
    sha = _text(head.get("sha"))
    if sha is None or _SHA.fullmatch(sha) is None:
        return "pull_request payload has no valid head commit SHA", 400
    sender = data.get("sender")
    return PullRequestEvent(
        delivery_id=delivery_id,
        action=action,
        number=number,
        head_sha=sha,
        head_ref=_text(head.get("ref")) or "",
        head_repo=_full_name(head),
        base_repo=_full_name(base),
        base_ref=_text(base.get("ref")) or "",
        sender=_text(sender.get("login")) if isinstance(sender, dict) else None,
        merged=pr.get("merged") is True,
        title=_text(pr.get("title")),
    )
