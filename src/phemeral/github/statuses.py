"""Report commit statuses back to GitHub: pending while building, then success or failure.

`status_request` is pure (what to send where); `StatusReporter` is the thin shell that sends
it with httpx, with the token of the project's `TokenProvider` (a 401 is retried once with a
fresh token when the provider has one). A status that cannot be reported is logged and its
reason returned: it never fails, delays or changes a deployment. The token is sent only in the
``Authorization`` header and never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

import httpx

from phemeral.errors import GitHubRefused
from phemeral.github.app_auth import github_message
from phemeral.github.tokens import TokenProvider, send_authorized
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
        auth: TokenProvider,
        target_url: str | None,
        description: str,
    ) -> str | None:
        """Send one status: None when GitHub accepted it, else why not (also logged)."""
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
            return str(exc)
        reason = "not sent"
        for attempt in range(1, self._attempts + 1):
            try:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await send_authorized(
                        auth,
                        lambda token: client.post(
                            request.url, json=request.body, headers=_headers(token)
                        ),
                    )
            except GitHubRefused as exc:  # no token to send (an App that cannot get one)
                log.warning("commit status for %s@%s not reported: %s", full_name, sha[:12], exc)
                return exc.message
            except httpx.HTTPError as exc:
                reason = f"GitHub unreachable ({type(exc).__name__})"
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
                return None
            reason = f"refused by GitHub ({auth.kind}): " + github_message(
                response.status_code, response.content
            )
            log.warning("commit status %s for %s@%s %s", state.value, full_name, sha[:12], reason)
            if response.status_code < 500:
                return reason
        return reason


def _headers(token: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "phemeral",
    }
