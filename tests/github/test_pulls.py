"""The pure parts of previews: pull-request payloads, the preview limit, the comment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from phemeral.deploys.previews import previews_to_suspend
from phemeral.github.comments import PreviewComment, comment_body
from phemeral.github.events import Ignored, Malformed, PullRequestDelivery, parse_delivery
from phemeral.github.pulls import PullAction
from phemeral.models import DeploymentStatus

from .gitrepo import pull_request_body

SHA = "a" * 40


def parse(body: bytes) -> object:
    return parse_delivery("pull_request", "guid-1", body)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("opened", PullAction.OPEN),
        ("reopened", PullAction.OPEN),
        ("synchronize", PullAction.SYNC),
        ("closed", PullAction.CLOSE),
    ],
)
def test_actions_that_change_a_preview(action: str, expected: PullAction) -> None:
    decision = parse(pull_request_body(action, 12, head_sha=SHA))
    assert isinstance(decision, PullRequestDelivery)
    assert decision.event.action is expected
    assert decision.event.number == 12
    assert decision.event.head_sha == SHA
    assert decision.event.fork is False
    assert decision.repository.full_name == "octo/hello"


def test_a_head_in_another_repository_is_a_fork() -> None:
    decision = parse(pull_request_body("opened", 1, head_sha=SHA, head_repo="mallory/hello"))
    assert isinstance(decision, PullRequestDelivery) and decision.event.fork
    payload = json.loads(pull_request_body("opened", 1, head_sha=SHA))
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    deleted = parse(json.dumps(payload).encode())
    assert isinstance(deleted, PullRequestDelivery) and deleted.event.fork


def test_other_actions_and_bad_payloads() -> None:
    assert isinstance(parse(pull_request_body("labeled", 1, head_sha=SHA)), Ignored)
    payload = json.loads(pull_request_body("opened", 1, head_sha=SHA))
    for broken in (
        {**payload, "number": "1"},
        {**payload, "number": -4},
        {**payload, "pull_request": {**payload["pull_request"], "head": {"sha": "zz"}}},
        {k: v for k, v in payload.items() if k != "action"},
    ):
        assert isinstance(parse(json.dumps(broken).encode()), Malformed), broken


def test_the_oldest_idle_previews_are_suspended_beyond_the_limit() -> None:
    t = datetime(2026, 11, 30, tzinfo=UTC)
    active = {f"pr-{i}": t + timedelta(minutes=i) for i in range(1, 6)}
    assert previews_to_suspend(active, 3, keep="pr-6") == ["pr-1", "pr-2", "pr-3"]
    assert previews_to_suspend(active, 10, keep="pr-6") == []
    # The preview being opened is never the one suspended, however old.
    assert previews_to_suspend(active, 2, keep="pr-1") == ["pr-2", "pr-3", "pr-4"]


def test_the_comment_names_url_commit_status_and_build_time() -> None:
    body = comment_body(
        PreviewComment(
            number=7,
            environment="pr-7",
            url="http://api-pr-7.example.com",
            deployment_url="http://abc.example.com",
            commit=SHA,
            status=DeploymentStatus.FAILED,
            reason="import error:\nno module named x",
            build_seconds=12.34,
            fork_without_secrets=True,
            approve_hint="phemeral previews approve api 7",
        )
    )
    assert "http://api-pr-7.example.com" in body and SHA[:12] in body
    assert "failed: import error: no module named x" in body
    assert "12.3 s" in body
    assert "phemeral previews approve api 7" in body
