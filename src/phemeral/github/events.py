"""Turn a verified GitHub delivery into a decision: pong, ignore (with why), reject, or a push.

Pure: headers and raw bytes in, a value out. Call it only after the signature was verified
(`phemeral.github.signature`); the body-size limit is checked even earlier, by the shell, from
`MAX_BODY_BYTES`. Which project and environment a push reaches is decided here too
(`repository_matches`, `environments_for_branch`), from plain values the caller loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import parse_qs

from phemeral.github.pulls import PullRequestEvent, parse_pull_request
from phemeral.github.repository import github_full_name, repository_key

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub does not send larger payloads
MAX_DELIVERY_ID = 64  # GitHub sends a GUID (36 characters)
MAX_SEQUENCE = 2**31 - 1  # push sequences are stored as 32-bit integers
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ZERO_SHA = re.compile(r"0+")
_BRANCH_PREFIX = "refs/heads/"
_TAG_PREFIX = "refs/tags/"
_REPOSITORY_URL_FIELDS = ("html_url", "clone_url", "git_url", "ssh_url", "svn_url", "url")


@dataclass(frozen=True)
class Pong:
    """A ``ping`` (sent when the webhook is created): answer 200, do nothing."""

    zen: str | None
    hook_id: int | None
    status: int = 200


@dataclass(frozen=True)
class Ignored:
    """A verified delivery that creates nothing; ``reason`` is returned to GitHub."""

    reason: str
    status: int = 202


@dataclass(frozen=True)
class Malformed:
    """A verified delivery whose content cannot be understood (400)."""

    reason: str
    status: int = 400


@dataclass(frozen=True)
class Repository:
    """The repository a delivery names: ``full_name`` and every URL the payload gives for it."""

    full_name: str | None
    urls: tuple[str, ...]


@dataclass(frozen=True)
class PushEvent:
    """A push of commits to a branch (never a tag or a deletion)."""

    delivery_id: str
    repository: Repository
    ref: str
    branch: str
    after: str  # the exact commit to deploy
    before: str | None
    pusher: str | None
    created: bool
    forced: bool
    head_commit_message: str | None
    pushed_at: int | None = None  # GitHub's clock (epoch seconds) when the push happened

    @property
    def full_name(self) -> str | None:
        return self.repository.full_name


@dataclass(frozen=True)
class PullRequestDelivery:
    """A pull-request delivery that changes a preview (see `phemeral.github.pulls`)."""

    event: PullRequestEvent
    repository: Repository


Decision = Pong | Ignored | Malformed | PushEvent | PullRequestDelivery


def too_large(content_length: str | None) -> bool:
    """True when a declared ``Content-Length`` exceeds `MAX_BODY_BYTES` (or is nonsense)."""
    if content_length is None:
        return False
    try:
        declared = int(content_length)
    except ValueError:
        return True
    return declared < 0 or declared > MAX_BODY_BYTES


def _payload(body: bytes, content_type: str | None) -> dict[str, Any] | Malformed:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    raw: bytes | str = body
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            return Malformed("form-encoded body cannot be parsed")
        values = fields.get("payload")
        if not values or len(values) != 1:
            return Malformed("form-encoded body has no single 'payload' field")
        raw = values[0]
    elif media not in ("application/json", "text/json") and not media.endswith("+json"):
        return Malformed(f"unsupported Content-Type {media!r} (use application/json)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return Malformed("body is not valid UTF-8 JSON")
    if not isinstance(data, dict):
        return Malformed("body is not a JSON object")
    return data


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _repository(data: Mapping[str, Any]) -> Repository:
    repo = data.get("repository")
    if not isinstance(repo, dict):
        return Repository(None, ())
    urls = tuple(u for f in _REPOSITORY_URL_FIELDS if (u := _text(repo.get(f))) is not None)
    return Repository(_text(repo.get("full_name")), urls)


def parse_delivery(
    event: str | None, delivery_id: str | None, body: bytes, content_type: str | None = None
) -> Decision:
    """Decide what a (signature-verified) delivery means."""
    if not event:
        return Malformed("missing X-GitHub-Event header")
    if not delivery_id or len(delivery_id) > MAX_DELIVERY_ID or not delivery_id.isprintable():
        return Malformed("missing or malformed X-GitHub-Delivery header")
    if event not in ("ping", "push", "pull_request"):
        return Ignored(f"event {event!r} is not handled (only push, pull_request and ping)")
    data = _payload(body, content_type)
    if isinstance(data, Malformed):
        return data
    if event == "ping":
        hook_id = data.get("hook_id")
        return Pong(_text(data.get("zen")), hook_id if isinstance(hook_id, int) else None)
    if event == "pull_request":
        pull = parse_pull_request(delivery_id, data)
        if isinstance(pull, tuple):
            reason, status = pull
            return Ignored(reason) if status == 202 else Malformed(reason)
        return PullRequestDelivery(pull, _repository(data))
    return _push(delivery_id, data)


def _pushed_at(repo: object) -> int | None:
    value = repo.get("pushed_at") if isinstance(repo, dict) else None
    if isinstance(value, str):
        try:
            value = int(datetime.fromisoformat(value).timestamp())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = int(value)
    return seconds if 0 < seconds < MAX_SEQUENCE else None


def _push(delivery_id: str, data: Mapping[str, Any]) -> Decision:
    ref = _text(data.get("ref"))
    if ref is None:
        return Malformed("push payload has no 'ref'")
    if ref.startswith(_TAG_PREFIX):
        return Ignored(f"tag push ({ref[len(_TAG_PREFIX) :]}) does not deploy")
    if not ref.startswith(_BRANCH_PREFIX) or len(ref) == len(_BRANCH_PREFIX):
        return Ignored(f"ref {ref!r} is not a branch")
    branch = ref[len(_BRANCH_PREFIX) :]
    after = _text(data.get("after"))
    if data.get("deleted") is True or (after is not None and _ZERO_SHA.fullmatch(after)):
        return Ignored(f"branch {branch!r} was deleted; nothing to deploy")
    if after is None or _SHA.fullmatch(after) is None:
        return Malformed("push payload has no valid 'after' commit SHA")
    before = _text(data.get("before"))
    pusher_obj = data.get("pusher")
    sender_obj = data.get("sender")
    pusher = _text(pusher_obj.get("name")) if isinstance(pusher_obj, dict) else None
    if pusher is None and isinstance(sender_obj, dict):
        pusher = _text(sender_obj.get("login"))
    head = data.get("head_commit")
    message = _text(head.get("message")) if isinstance(head, dict) else None
    return PushEvent(
        delivery_id=delivery_id,
        repository=_repository(data),
        ref=ref,
        branch=branch,
        after=after,
        before=before if before is not None and _SHA.fullmatch(before) else None,
        pusher=pusher,
        created=data.get("created") is True,
        forced=data.get("forced") is True,
        head_commit_message=message,
        pushed_at=_pushed_at(data.get("repository")),
    )


def repository_matches(project_repo_url: str | None, repository: Repository) -> bool:
    """True when the delivery's repository is the project's configured one.

    Matches by ``full_name`` against a github.com project URL, or by any payload URL naming
    the same repository as the configured URL (https, ssh, ``.git`` and case variants alike).
    """
    if not project_repo_url:
        return False
    key = repository_key(project_repo_url)
    if key is None:
        return False
    full_name = github_full_name(project_repo_url)
    if full_name and repository.full_name and full_name.lower() == repository.full_name.lower():
        return True
    return any(repository_key(url) == key for url in repository.urls)


def branch_matches(branch: str, patterns: Iterable[str]) -> bool:
    """True when ``branch`` equals one of ``patterns`` or matches one with ``*``/``?`` globs."""
    return any(branch == p or (("*" in p or "?" in p) and fnmatchcase(branch, p)) for p in patterns)


def environments_for_branch(branch: str, mapping: Mapping[str, Sequence[str]]) -> list[str]:
    """Names of the environments whose mapped branches include ``branch``, sorted."""
    return sorted(env for env, patterns in mapping.items() if branch_matches(branch, patterns))


@dataclass(frozen=True)
class HookProject:
    """A project whose webhook secret verified the delivery, with what routing needs."""

    name: str
    repo_url: str | None
    branches: Mapping[str, Sequence[str]]  # environment name → mapped branch patterns


@dataclass(frozen=True)
class Target:
    """One deployment a push creates: this project, this environment."""

    project: str
    environment: str


def connected_projects(
    repository: Repository, projects: Sequence[HookProject]
) -> list[HookProject] | Ignored:
    """The verified projects whose configured repository is the delivery's, or why none."""
    connected = [p for p in projects if repository_matches(p.repo_url, repository)]
    if connected:
        return sorted(connected, key=lambda p: p.name)
    repo_name = repository.full_name or (repository.urls[0] if repository.urls else "?")
    names = ", ".join(sorted(p.name for p in projects)) or "no project"
    return Ignored(f"repository {repo_name} is not the repository configured for {names}")


def plan_push(push: PushEvent, projects: Sequence[HookProject]) -> list[Target] | Ignored:
    """The deployments a push creates among the projects that verified it, or why none."""
    connected = connected_projects(push.repository, projects)
    if isinstance(connected, Ignored):
        return connected
    targets = [
        Target(p.name, env)
        for p in sorted(connected, key=lambda p: p.name)
        for env in environments_for_branch(push.branch, p.branches)
    ]
    if targets:
        return targets
    mapped = "; ".join(
        f"{p.name}: "
        + (
            ", ".join(
                f"{' '.join(pats)} → {env}" for env, pats in sorted(p.branches.items()) if pats
            )
            or "none"
        )
        for p in sorted(connected, key=lambda p: p.name)
    )
    return Ignored(f"branch {push.branch!r} is not mapped to an environment (mapped: {mapped})")


def push_sequence(pushed_at: int | None, received_at: datetime, parent_seq: int | None) -> int:
    """The ordering number of a push among the pushes of one environment (newer = larger).

    Deliveries arrive in any order, so the order they arrive in says nothing. The push's own
    time on GitHub's clock (``repository.pushed_at``, else the time it was received) orders
    pushes to the second; a push whose ``before`` is the commit of a known push (its parent)
    always sorts after that one, even within the same second.
    """
    base = pushed_at if pushed_at is not None else int(received_at.timestamp())
    return after_parent(min(base, MAX_SEQUENCE), parent_seq)


def after_parent(seq: int, parent_seq: int | None) -> int:
    """``seq`` moved past the sequence of the push's parent when that one is not older."""
    if parent_seq is not None and parent_seq >= seq:
        seq = parent_seq + 1
    return min(seq, MAX_SEQUENCE)
