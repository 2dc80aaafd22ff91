"""Delivery decisions (W4), repository matching and branch mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from phemeral.errors import InvalidInput
from phemeral.github.events import (
    MAX_BODY_BYTES,
    HookProject,
    Ignored,
    Malformed,
    Pong,
    PushEvent,
    Repository,
    Target,
    environments_for_branch,
    parse_delivery,
    plan_push,
    push_sequence,
    repository_matches,
    too_large,
)
from phemeral.github.repository import github_full_name, repository_key, validate_repo_url

SHA = "a" * 40


def push(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ref": "refs/heads/main",
        "before": "b" * 40,
        "after": SHA,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {
            "full_name": "Octo/Hello",
            "html_url": "https://github.com/Octo/Hello",
            "clone_url": "https://github.com/Octo/Hello.git",
            "ssh_url": "git@github.com:Octo/Hello.git",
        },
        "pusher": {"name": "octocat", "email": "o@example.com"},
        "head_commit": {"id": SHA, "message": "Fix the thing"},
    }
    body.update(changes)
    return body


def decide(event: str, payload: object, ctype: str = "application/json") -> object:
    return parse_delivery(event, "guid-1", json.dumps(payload).encode(), ctype)


def test_push_to_branch() -> None:
    decision = decide("push", push())
    assert isinstance(decision, PushEvent)
    assert (decision.branch, decision.after, decision.pusher) == ("main", SHA, "octocat")
    assert decision.full_name == "Octo/Hello"
    assert decision.head_commit_message == "Fix the thing"
    assert decision.delivery_id == "guid-1"


def test_branch_with_slashes_and_null_head_commit() -> None:
    decision = decide("push", push(ref="refs/heads/feature/x", head_commit=None, created=True))
    assert isinstance(decision, PushEvent)
    assert decision.branch == "feature/x"
    assert decision.head_commit_message is None
    assert decision.created


def test_form_encoded_payload() -> None:
    body = urlencode({"payload": json.dumps(push())}).encode()
    decision = parse_delivery("push", "g", body, "application/x-www-form-urlencoded")
    assert isinstance(decision, PushEvent)


def test_ping_and_unsupported_events() -> None:
    assert isinstance(decide("ping", {"zen": "Keep it simple.", "hook_id": 7}), Pong)
    ignored = decide("issues", {"action": "opened"})
    assert isinstance(ignored, Ignored)
    assert ignored.status == 202
    assert "issues" in ignored.reason


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (push(ref="refs/tags/v1.0"), "tag push"),
        (push(deleted=True, after="0" * 40), "deleted"),
        (push(after="0" * 40), "deleted"),
        (push(ref="refs/pull/1/head"), "not a branch"),
    ],
)
def test_pushes_that_deploy_nothing(payload: dict[str, Any], why: str) -> None:
    decision = decide("push", payload)
    assert isinstance(decision, Ignored)
    assert why in decision.reason


@pytest.mark.parametrize(
    ("event", "delivery", "body", "ctype"),
    [
        ("push", "g", b"{not json", "application/json"),
        ("push", "g", b"\xff\xfe", "application/json"),
        ("push", "g", b"[1, 2]", "application/json"),
        ("push", "g", b"payload=%7B", "application/x-www-form-urlencoded"),
        ("push", "g", json.dumps(push()).encode(), "text/plain"),
        ("push", "g", json.dumps(push(after="zz")).encode(), "application/json"),
        ("push", "g", json.dumps(push(ref=None)).encode(), "application/json"),
        ("push", "g", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (None, "g", b"{}", "application/json"),
        ("push", None, b"{}", "application/json"),
        ("push", "x\n", b"{}", "application/json"),
    ],
)
def test_malformed(event: str | None, delivery: str | None, body: bytes, ctype: str) -> None:
    decision = parse_delivery(event, delivery, body, ctype)
    assert isinstance(decision, Malformed)
    assert decision.status == 400


def test_size_limit() -> None:
    assert not too_large(None)
    assert not too_large(str(MAX_BODY_BYTES))
    assert too_large(str(MAX_BODY_BYTES + 1))
    assert too_large("-1")
    assert too_large("lots")


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/hello",
        "https://github.com/Octo/Hello.git",
        "https://github.com/octo/hello/",
        "http://github.com/octo/hello",
        "git@github.com:octo/hello.git",
        "ssh://git@github.com/octo/hello.git",
        "ssh://git@github.com:22/Octo/Hello",
        "git://github.com/octo/hello.git",
    ],
)
def test_url_forms_name_the_same_repository(url: str) -> None:
    assert repository_key(url) == "github.com/octo/hello"
    assert github_full_name(url) is not None
    assert repository_matches(url, Repository("Octo/Hello", ()))
    assert repository_matches(url, Repository(None, ("git@github.com:Octo/Hello.git",)))


def test_other_repositories_do_not_match() -> None:
    repo = Repository("octo/hello", ("https://github.com/octo/hello",))
    assert not repository_matches("https://github.com/octo/hello-world", repo)
    assert not repository_matches("https://gitlab.com/octo/hello", repo)
    assert not repository_matches(None, repo)
    assert not repository_matches("https://github.com/octo/hello", Repository(None, ()))
    # full_name matching applies to github.com URLs only
    assert not repository_matches("https://git.example.com/octo/hello", repo)


def test_local_repositories_match_by_path() -> None:
    assert repository_key("/srv/repos/app/") == "file:///srv/repos/app"
    assert repository_key("file:///srv/repos/app") == "file:///srv/repos/app"
    repo = Repository("octo/app", ("file:///srv/repos/app",))
    assert repository_matches("/srv/repos/app", repo)
    assert not repository_matches("/srv/repos/other", repo)


def test_validate_repo_url() -> None:
    assert (
        validate_repo_url(" https://github.com/o/r ", allow_local=False) == "https://github.com/o/r"
    )
    assert validate_repo_url("http://git.example.com/o/r.git", allow_local=False)
    assert validate_repo_url("/srv/repo", allow_local=True) == "/srv/repo"
    for bad, why in [
        ("/srv/repo", "allow-local-repos"),
        ("file:///srv/repo", "allow-local-repos"),
        ("ftp://example.com/r", "use its https URL"),
        ("git@github.com:o/r.git", "use its https URL"),
        ("ssh://git@github.com/o/r", "use its https URL"),
        ("https://user:pw@github.com/o/r", "credentials"),
        ("https://tok@github.com/o/r", "credentials"),
        ("--upload-pack=x", "must not start"),
        ("https://github.com/", "not a repository"),
        ("", "empty"),
    ]:
        with pytest.raises(InvalidInput, match=why):
            validate_repo_url(bad, allow_local=False)


def test_branch_mapping() -> None:
    mapping = {"production": ["main"], "staging": ["develop", "release/*"], "preview": []}
    assert environments_for_branch("main", mapping) == ["production"]
    assert environments_for_branch("release/1.2", mapping) == ["staging"]
    assert environments_for_branch("mainline", mapping) == []
    assert environments_for_branch("feature", mapping) == []


def test_plan_push() -> None:
    decision = decide("push", push(ref="refs/heads/develop"))
    assert isinstance(decision, PushEvent)
    mine = HookProject("api", "https://github.com/octo/hello", {"production": ["main"]})
    other = HookProject("web", "https://github.com/octo/web", {"production": ["develop"]})
    staging = HookProject("api2", "git@github.com:octo/hello.git", {"staging": ["develop"]})
    ignored = plan_push(decision, [mine, other])
    assert isinstance(ignored, Ignored)
    assert "'develop' is not mapped" in ignored.reason
    assert "main → production" in ignored.reason
    assert plan_push(decision, [mine, other, staging]) == [Target("api2", "staging")]
    nothing = plan_push(decision, [other])
    assert isinstance(nothing, Ignored)
    assert "is not the repository configured for web" in nothing.reason


def test_pushed_at_is_read_from_the_repository() -> None:
    as_int = decide("push", push(repository={"full_name": "o/r", "pushed_at": 1_790_000_000}))
    as_iso = decide(
        "push", push(repository={"full_name": "o/r", "pushed_at": "2026-01-01T00:00:00Z"})
    )
    junk = decide("push", push(repository={"full_name": "o/r", "pushed_at": "yesterday"}))
    assert isinstance(as_int, PushEvent) and as_int.pushed_at == 1_790_000_000
    assert isinstance(as_iso, PushEvent) and as_iso.pushed_at == 1_767_225_600
    assert isinstance(junk, PushEvent) and junk.pushed_at is None


def test_push_sequence_orders_by_push_time_not_arrival() -> None:
    received = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    older = push_sequence(1_790_000_000, received, None)
    newer = push_sequence(1_790_000_060, received, None)
    assert newer > older  # whichever arrives first
    # no push time: the time it was received
    assert push_sequence(None, received, None) == int(received.timestamp())
    # same second: a push whose parent is known sorts after it
    assert push_sequence(1_790_000_000, received, parent_seq=1_790_000_000) == 1_790_000_001
    assert push_sequence(1_790_000_100, received, parent_seq=1_790_000_000) == 1_790_000_100
