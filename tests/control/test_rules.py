"""The pure rules of the control plane."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phemeral.deploys import resolved_start_command, should_promote
from phemeral.errors import BuildError, InvalidInput
from phemeral.models import CommitRelation, Release, StartCommandSource
from phemeral.store.cursor import clamp_limit, decode_cursor, encode_cursor
from phemeral.store.names import (
    DEPLOYMENT_ID,
    check_domain_label,
    check_project_name,
    default_domain,
    new_deployment_id,
)
from phemeral.store.variables import parse_assignment, runtime_env


@pytest.mark.parametrize(
    ("trigger", "promote", "seq", "promoted", "expected"),
    [
        ("manual", True, None, 5, True),
        ("manual", False, None, 0, False),
        ("push", True, 3, 2, True),
        ("push", True, 2, 2, False),  # the same push never moves it twice
        ("push", True, 1, 2, False),  # an older push finishing late stays non-current
        ("push", True, None, 0, False),
    ],
)
def test_should_promote(
    trigger: str, promote: bool, seq: int | None, promoted: int, expected: bool
) -> None:
    assert should_promote(trigger, promote, seq, promoted).promote is expected


@pytest.mark.parametrize(
    ("seq", "promoted", "relation", "expected"),
    [
        (1, 5, CommitRelation.DESCENDANT, True),  # a child with an older clock still wins
        (9, 5, CommitRelation.ANCESTOR, False),  # an older commit with a newer clock never does
        (9, 5, CommitRelation.UNRELATED, True),  # force push: the later push wins
        (4, 5, CommitRelation.UNRELATED, False),
        (9, 5, CommitRelation.UNKNOWN, True),
        (5, 5, CommitRelation.SAME, False),
        (9, 5, None, True),  # not compared: push times decide
    ],
)
def test_should_promote_follows_the_commit_graph(
    seq: int, promoted: int, relation: CommitRelation | None, expected: bool
) -> None:
    decision = should_promote(
        "push", True, seq, promoted, current_commit="a" * 40, relation=relation
    )
    assert decision.promote is expected
    assert "a" * 12 in decision.reason


def test_deployment_ids_are_dns_labels_and_unguessable() -> None:
    ids = {new_deployment_id() for _ in range(5000)}
    assert len(ids) == 5000
    for i in ids:
        assert DEPLOYMENT_ID.match(i) and i[0].isalpha() and len(i) == 12 and i == i.lower()


def test_domains() -> None:
    assert check_domain_label(" My-App ") == "my-app"
    for bad in ("api", "-x", "x-", "a_b", "a.b", "", "abcdefghijkl", "x" * 64):
        with pytest.raises(InvalidInput):
            check_domain_label(bad)
    longest = default_domain(check_project_name("p" * 40), "e" * 20)
    assert check_domain_label(longest.replace("p", "q")) and len(longest) <= 63


@given(st.lists(st.one_of(st.text(max_size=30), st.integers()), min_size=1, max_size=3))
def test_cursor_round_trip(key: list[str | int]) -> None:
    types = tuple(type(k) for k in key)
    assert list(decode_cursor(encode_cursor(*key), *types)) == key


@given(st.text(max_size=40))
def test_garbage_cursors_are_invalid_input_never_a_crash(cursor: str) -> None:
    with contextlib.suppress(InvalidInput):
        decode_cursor(cursor, str, str)


def test_limits() -> None:
    assert clamp_limit(None) == 50 and clamp_limit(10_000) == 500
    with pytest.raises(InvalidInput):
        clamp_limit(0)


def test_assignments_and_runtime_env() -> None:
    assert parse_assignment("A=b=c") == ("A", "b=c")
    for bad in ("NOVALUE", "PORT=1", "PHEMERAL_X=1", "9A=1"):
        with pytest.raises(InvalidInput):
            parse_assignment(bad)
    env = runtime_env(
        {"A": "1"},
        deployment_id="abc",
        environment="production",
        deployment_url="http://abc.x",
        environment_urls=["http://p-production.x"],
    )
    assert env == {
        "A": "1",
        "PHEMERAL_DEPLOYMENT_ID": "abc",
        "PHEMERAL_ENVIRONMENT": "production",
        "PHEMERAL_URL": "http://abc.x",
        "PHEMERAL_ENVIRONMENT_URLS": "http://p-production.x",
    }


def release(command: str, source: StartCommandSource) -> Release:
    path = Path("/r")
    return Release("d", "p", "e", path, path, path, "3.12", command, source, None)


def test_start_command_snapshot_wins() -> None:
    auto = release("uvicorn main:app", StartCommandSource.AUTODETECTED)
    assert resolved_start_command(None, auto) == ("uvicorn main:app", "autodetected")
    custom = release("gunicorn x", StartCommandSource.CUSTOM)
    assert resolved_start_command("gunicorn x", custom) == ("gunicorn x", "custom")
    with pytest.raises(BuildError):
        resolved_start_command("gunicorn x", auto)  # a build that ignored the saved command
    with pytest.raises(BuildError):
        resolved_start_command(None, custom)
