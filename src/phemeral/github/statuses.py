"""Report commit statuses back to GitHub: pending while building, then success or failure.

`status_request` is pure (what to send where); `StatusReporter` is the thin shell that sends
it with httpx. A status that cannot be reported is logged and dropped: it never fails, delays
or changes a deployment. The token is sent only in the ``Authorization`` header and never
appears in a log line or an error message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

import httpx

from phemeral.models import DeploymentStatus

log = logging.getLogger(__name__)

CONTEXT = "phemeral"
MAX_DESCRIPTION = 140  # GitHub truncates nothing: longer descriptions are refused with 422


class CommitState(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class StatusRequest:
    url: str
    body: dict[str, str]


def state_for(status: DeploymentStatus) -> CommitState:
    """The commit state that mirrors a deployment status."""
    return {
        DeploymentStatus.BUILDING: CommitState.PENDING,
        DeploymentStatus.SUCCESSFUL: CommitState.SUCCESS,
        DeploymentStatus.FAILED: CommitState.FAILURE,
    }[status]


def describe(
    status: DeploymentStatus, deployment_id: str, environment: str, reason: str | None
) -> str:
    """A one-line description (at most 140 characters) for the commit status."""
    if status is DeploymentStatus.BUILDING:
        text = f"Deployment {deployment_id} to {environment} is building"
    elif status is DeploymentStatus.SUCCESSFUL:
        text = f"Deployment {deployment_id} to {environment} succeeded"
    else:
        text = f"Deployment {deployment_id} to {environment} failed"
        if reason:
            text += f": {' '.join(reason.split())}"
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def status_request(
    api_url: str,
    full_name: str,
    sha: str,
    state: CommitState,
    *,
    target_url: str | None,
    description: str,
    context: str = CONTEXT,
) -> StatusRequest:
    """``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with its JSON body."""
    owner, _, repo = full_name.partition("/")
    if not owner or not repo or "/" in repo:
        raise ValueError(f"{full_name!r} is not an owner/repo name")
    url = (
        f"{api_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"
        f"/statuses/{quote(sha, safe='')}"
    )
    body = {"state": state.value, "description": description[:MAX_DESCRIPTION]}
    body["context"] = context
    if target_url:
        body["target_url"] = target_url
    return StatusRequest(url=url, body=body)


class StatusReporter:
    """Sends commit statuses; `report` never raises."""

    def __init__(self, api_url: str, *, timeout: float = 10.0, attempts: int = 2) -> None:
        self._api_url = api_url
        self._timeout = timeout
        self._attempts = max(1, attempts)

    async def report(
        self,
        full_name: str,
        sha: str,
        state: CommitState,
        *,
        token: str,
        target_url: str | None,
        description: str,
    ) -> bool:
        """Send one status; True when GitHub accepted it, False (logged) otherwise."""
        try:
            request = status_request(
                self._api_url,
                full_name,
                sha,
                state,
                target_url=target_url,
                description=description,
            )
        except ValueError as exc:
            log.warning("commit status for %s not reported: %s", sha[:12], exc)
            return False
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "phemeral",
        }
        for attempt in range(1, self._attempts + 1):
            try:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.post(request.url, json=request.body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning(
                    "commit status %s for %s@%s not reported (attempt %d): %s",
                    state.value,
                    full_name,
                    sha[:12],
                    attempt,
                    type(exc).__name__,
                )
                continue
            if response.status_code < 300:
                return True
            log.warning(
                "commit status %s for %s@%s refused by GitHub: HTTP %d",
                state.value,
                full_name,
                sha[:12],
                response.status_code,
            )
            if response.status_code < 500:
                return False
        return False
