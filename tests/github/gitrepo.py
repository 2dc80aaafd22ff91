"""Real git repositories on local paths, and the push deliveries GitHub would send for them."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from platformkit import GIT_ENV, commit, git, init_repo

from phemeral.github.signature import sign

__all__ = ["GIT_ENV", "commit", "git", "headers", "init_repo", "pull_request_body", "push_body"]


def push_body(
    repo: Path,
    *,
    before: str,
    after: str,
    branch: str = "main",
    full_name: str = "octo/hello",
    clone_url: str | None = None,
    pushed_at: int | None = None,
    **extra: Any,
) -> bytes:
    """The push payload GitHub sends (the fields Phemeral reads, plus realistic extras).

    ``clone_url`` stands in for GitHub's own URL when the project is connected to a local path.
    """
    try:
        message: str | None = git(repo, "log", "-1", "--format=%s", after)
    except subprocess.CalledProcessError:  # a deletion, or a commit the repository lacks
        message = None
    payload: dict[str, Any] = {
        "ref": f"refs/heads/{branch}",
        "before": before,
        "after": after,
        "created": before == "0" * 40,
        "deleted": after == "0" * 40,
        "forced": False,
        "repository": {
            "id": 1296269,
            "name": full_name.split("/")[1],
            "full_name": full_name,
            "private": False,
            "html_url": f"https://github.com/{full_name}",
            "clone_url": clone_url or f"https://github.com/{full_name}.git",
            "ssh_url": f"git@github.com:{full_name}.git",
            "pushed_at": pushed_at if pushed_at is not None else int(time.time()),
        },
        "pusher": {"name": "octocat", "email": "octo@example.com"},
        "sender": {"login": "octocat"},
        "head_commit": {"id": after, "message": message} if message else None,
        "commits": [],
    }
    payload.update(extra)
    return json.dumps(payload).encode()


def pull_request_body(
    action: str,
    number: int,
    *,
    head_sha: str,
    head_ref: str = "feature",
    head_repo: str = "octo/hello",
    full_name: str = "octo/hello",
    clone_url: str | None = None,
    merged: bool = False,
) -> bytes:
    """The ``pull_request`` payload GitHub sends (the fields Phemeral reads, plus extras)."""
    repository = {
        "id": 1296269,
        "name": full_name.split("/")[1],
        "full_name": full_name,
        "html_url": f"https://github.com/{full_name}",
        "clone_url": clone_url or f"https://github.com/{full_name}.git",
    }
    payload: dict[str, Any] = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": f"Change {number}",
            "state": "closed" if action == "closed" else "open",
            "merged": merged,
            "draft": False,
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo}},
            "base": {"ref": "main", "sha": "0" * 40, "repo": {"full_name": full_name}},
        },
        "repository": repository,
        "sender": {"login": "octocat"},
    }
    return json.dumps(payload).encode()


def headers(
    secret: str, body: bytes, *, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }
