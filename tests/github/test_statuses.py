"""Commit statuses sent to a local GitHub statuses endpoint (a real HTTP server)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from phemeral.github.statuses import CommitState, StatusReporter, describe
from phemeral.github.tokens import StaticToken
from phemeral.models import DeploymentStatus

from .fake_github import FakeGitHub, start_fake_github

SHA = "c" * 40
TOKEN = "ghp_secret_token_value_123"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = start_fake_github()
    yield fake
    fake.close()


def report(api_url: str, state: CommitState = CommitState.PENDING) -> str | None:
    reporter = StatusReporter(api_url, timeout=3, attempts=2)
    return asyncio.run(
        reporter.report(
            "octo/hello",
            SHA,
            state,
            auth=StaticToken(TOKEN),
            target_url="http://d-abc.phemeral.localhost:8000",
            description="Deployment d-abc to production is building",
        )
    )


def test_reports_a_status(github: FakeGitHub) -> None:
    assert report(github.url, CommitState.SUCCESS) is None
    [sent] = github.statuses()
    assert sent.path == f"/repos/octo/hello/statuses/{SHA}"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.body == {
        "state": "success",
        "target_url": "http://d-abc.phemeral.localhost:8000",
        "description": "Deployment d-abc to production is building",
        "context": "phemeral",
    }


def test_refusal_is_logged_without_the_token(
    github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    github.answer_status = 500
    with caplog.at_level(logging.DEBUG):
        assert report(github.url) == "refused by GitHub (access token): HTTP 500: Failed"
    assert len(github.statuses()) == 2  # one retry on a server error
    assert "HTTP 500" in caplog.text
    assert TOKEN not in caplog.text


def test_client_error_is_not_retried(github: FakeGitHub) -> None:
    github.answer_status = 422
    assert report(github.url) == "refused by GitHub (access token): HTTP 422: Failed"
    assert len(github.statuses()) == 1


def test_unreachable_github_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING):
        assert report(f"http://127.0.0.1:{port}") == "GitHub unreachable (ConnectError)"
    assert TOKEN not in caplog.text


def test_descriptions_fit_githubs_limit() -> None:
    text = describe(DeploymentStatus.FAILED, "d-abc", "production", "x " * 500)
    assert len(text) <= 140
    assert text.startswith("Deployment d-abc to production failed: x x")
