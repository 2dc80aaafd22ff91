"""The pull-request comment a preview keeps up to date: one per preview, edited in place.

``comment_body`` is pure; `CommentWriter.upsert` creates the comment once
(``POST /repos/O/R/issues/N/comments``) and edits it afterwards
(``PATCH /repos/O/R/issues/comments/ID``), with the project's `TokenProvider`. It never raises
and never logs the token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from phemeral.errors import GitHubRefused
from phemeral.github.app_auth import github_message
from phemeral.github.tokens import TokenProvider, send_authorized
from phemeral.models import DeploymentStatus

log = logging.getLogger(__name__)

MARKER = "<!-- phemeral-preview -->"


@dataclass(frozen=True)
class PreviewComment:
    number: int
    environment: str
    url: str  # the preview's own domain
    deployment_url: str
    commit: str
    status: DeploymentStatus
    reason: str | None
    build_seconds: float | None
    fork_without_secrets: bool
    approve_hint: str


def comment_body(c: PreviewComment) -> str:
    """Markdown for the preview comment."""
    status = {
        DeploymentStatus.BUILDING: "⏳ building",
        DeploymentStatus.SUCCESSFUL: "✅ ready",
        DeploymentStatus.FAILED: "❌ failed",
    }[c.status]
    if c.status is DeploymentStatus.FAILED and c.reason:
        status += f": {' '.join(c.reason.split())[:300]}"
    took = f"{c.build_seconds:.1f} s" if c.build_seconds is not None else "–"
    lines = [
        MARKER,
        f"**Preview** `{c.environment}` for #{c.number}",
        "",
        "| | |",
        "|---|---|",
        f"| Preview | {c.url} |",
        f"| Deployment | {c.deployment_url} |",
        f"| Commit | `{c.commit[:12]}` |",
        f"| Status | {status} |",
        f"| Build time | {took} |",
    ]
    if c.fork_without_secrets:
        lines += [
            "",
            "This pull request comes from a fork: it was built **without** the project's "
            "preview variables or service credentials. Someone with rights can approve it: "
            f"`{c.approve_hint}`.",
        ]
    return "\n".join(lines) + "\n"


def _repo_path(full_name: str) -> str:
    owner, _, repo = full_name.partition("/")
    if not owner or not repo or "/" in repo:
        raise ValueError(f"{full_name!r} is not an owner/repo name")
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


class CommentWriter:
    def __init__(self, api_url: str, *, timeout: float = 10.0) -> None:
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout

    async def upsert(
        self,
        full_name: str,
        number: int,
        comment_id: int | None,
        body: str,
        *,
        auth: TokenProvider,
    ) -> tuple[int | None, str | None]:
        """Edit comment ``comment_id`` (or create one): (the comment's id, None) when written,
        (the id known before, why not) otherwise."""
        try:
            base = self._api_url + _repo_path(full_name)
        except ValueError as exc:
            log.warning("preview comment for #%d not written: %s", number, exc)
            return None, str(exc)
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                if comment_id is not None:
                    response = await send_authorized(
                        auth,
                        lambda token: client.patch(
                            f"{base}/issues/comments/{comment_id}",
                            json={"body": body},
                            headers=_headers(token),
                        ),
                    )
                    if response.status_code < 300:
                        return comment_id, None
                    if response.status_code != 404:  # deleted by someone: write a new one
                        reason = f"edit refused by GitHub ({auth.kind}): " + github_message(
                            response.status_code, response.content
                        )
                        log.warning("preview comment %s", reason)
                        return comment_id, reason
                response = await send_authorized(
                    auth,
                    lambda token: client.post(
                        f"{base}/issues/{number}/comments",
                        json={"body": body},
                        headers=_headers(token),
                    ),
                )
        except GitHubRefused as exc:
            log.warning("preview comment for #%d not written: %s", number, exc)
            return comment_id, exc.message
        except httpx.HTTPError as exc:
            log.warning("preview comment for #%d not written: %s", number, type(exc).__name__)
            return comment_id, f"GitHub unreachable ({type(exc).__name__})"
        if response.status_code >= 300:
            reason = f"refused by GitHub ({auth.kind}): " + github_message(
                response.status_code, response.content
            )
            log.warning("preview comment for #%d %s", number, reason)
            return comment_id, reason
        data: Any = response.json()
        new_id = data.get("id") if isinstance(data, dict) else None
        return (new_id if isinstance(new_id, int) else comment_id), None


def _headers(token: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "phemeral",
    }
