"""Fetch one exact commit of a repository into a clean checkout, inside the build sandbox.

git runs as the app uid with the network shared and nothing else of the host visible. It fetches
only the wanted commit (``--depth 1``), never submodules, never LFS objects, never prompts, and
local paths / ``file://`` URLs are refused unless the operator allows them. A token travels in
a throw-away git config file (``http.extraHeader``), never in argv, URLs or the log.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from phemeral.build.runner import BuildContext, run
from phemeral.errors import SourceError
from phemeral.models import CommitRelation, GitSource

STAGE = "source"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def check_source(source: GitSource, *, allow_local: bool) -> Path | None:
    """Validate URL and commit (pure); returns the local repository path when it is one."""
    if not _SHA.match(source.commit):
        raise SourceError(f"commit {source.commit!r} is not a full hexadecimal commit id")
    url = source.url
    if url.startswith("-"):
        raise SourceError(f"repository URL {url!r} is not valid")
    parts = urlsplit(url)
    if parts.scheme in ("https", "http"):
        if not parts.hostname:
            raise SourceError(f"repository URL {url!r} has no host")
        if parts.username or parts.password:
            raise SourceError("repository URLs must not carry credentials; use a token instead")
        return None
    local = Path(parts.path) if parts.scheme == "file" else Path(url) if not parts.scheme else None
    if local is None:
        raise SourceError(f"repository URL {url!r}: only https URLs are supported")
    if not allow_local:
        raise SourceError(
            f"repository {url!r} is a local path; local repositories are disabled "
            "(allow_local_repos setting)"
        )
    if not local.is_absolute():
        raise SourceError(f"local repository path {url!r} must be absolute")
    return local


def _auth_config(token: str) -> str:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f'[http]\n\textraHeader = "Authorization: Basic {basic}"\n'


@dataclass(frozen=True)
class _Git:
    """A private git home (config with the token, never in argv) and the argv prefix to use."""

    private: Path
    env: dict[str, str]
    common: list[str]
    local: Path | None

    @property
    def ro(self) -> list[Path]:
        return [self.private, *([self.local] if self.local is not None else [])]


def _prepare(source: GitSource, private: Path, uid: int | None, *, allow_local: bool) -> _Git:
    local = check_source(source, allow_local=allow_local)
    private.mkdir(mode=0o700)
    config = private / "gitconfig"
    config.write_text(
        (_auth_config(source.token) if source.token else "")
        # `-c safe.directory` does not reach the local upload-pack (git clears -c for it); the
        # global file does, and a local repository is usually owned by another uid than ours.
        # Filtered fetches (commits only, for ancestry) need the serving side to allow them.
        + ("[safe]\n\tdirectory = *\n[uploadpack]\n\tallowFilter = true\n" if local else "")
    )
    config.chmod(0o600)
    _chown(uid, private, config)
    env = {
        "HOME": str(private),
        "GIT_CONFIG_GLOBAL": str(config),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_LFS_SKIP_SMUDGE": "1",
        "GIT_ASKPASS": "/bin/true",
        "GIT_SSH_COMMAND": "false",
    }
    protocol = "always" if local is not None else "never"
    common = ["git", "-c", f"protocol.file.allow={protocol}", "-c", "core.hooksPath=/dev/null"]
    if local is not None:
        common += ["-c", "safe.directory=*"]
    return _Git(private, env, common, local)


async def fetch(source: GitSource, dest: Path, ctx: BuildContext, *, allow_local: bool) -> str:
    """Check out ``source.commit`` into ``dest`` (created, must not exist); returns the commit."""
    g = _prepare(source, dest.parent / ".git-fetch", ctx.uid, allow_local=allow_local)
    dest.mkdir()
    _chown(ctx.uid, dest)
    common = g.common
    steps = [
        [*common, "init", "-q", "."],
        [*common, "remote", "add", "origin", source.url],
        [
            *common,
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--no-recurse-submodules",
            "origin",
            source.commit,
        ],
        [*common, "-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"],
        [*common, "rev-parse", "HEAD"],
    ]
    try:
        result = None
        for argv in steps:
            result = await run(
                ctx,
                STAGE,
                argv,
                chdir=dest,
                env=g.env,
                share_net=g.local is None,
                ro=g.ro,
                quiet=True,
            )
            if not result.ok:
                reason = _redact(result.tail(10), source.token)
                raise SourceError(
                    f"could not fetch commit {source.commit[:12]} of {source.url}: {reason}"
                )
        assert result is not None
        head = result.output[-1].strip() if result.output else ""
        if head != source.commit:
            raise SourceError(f"checked out {head[:12]!r} instead of {source.commit[:12]}")
    finally:
        shutil.rmtree(g.private, ignore_errors=True)
    return source.commit


async def ancestry(
    source: GitSource, work: Path, ctx: BuildContext, *, allow_local: bool
) -> dict[str, CommitRelation]:
    """How ``source.commit`` relates to each of ``source.compare`` in the repository's history.

    Only commit objects are fetched (``--filter=tree:0``: no trees, no file contents) into a
    throw-away bare repository, then ``git merge-base --is-ancestor`` settles each pair. A commit
    the remote no longer has (force-pushed away) is `CommitRelation.UNKNOWN`. Never raises for a
    git failure: ordering falls back to push times, and the build log says so.
    """
    g = _prepare(source, work / ".git-graph", ctx.uid, allow_local=allow_local)
    graph = g.private / "graph.git"
    graph.mkdir()
    _chown(ctx.uid, graph)
    relations: dict[str, CommitRelation] = {}

    async def git_ok(*args: str) -> int:
        result = await run(
            ctx,
            STAGE,
            [*g.common, *args],
            chdir=graph,
            env=g.env,
            share_net=g.local is None,
            ro=[p for p in g.ro if p != g.private],
            rw=[g.private],
            quiet=True,
        )
        if result.returncode not in (0, 1):
            reason = _redact(result.tail(3), source.token)
            ctx.log.write(STAGE, f"history: git {args[0]} failed ({reason}); push times decide")
        return result.returncode

    fetch_args = ("fetch", "--quiet", "--filter=tree:0", "--no-tags", "--no-recurse-submodules")
    try:
        if await git_ok("init", "-q", "--bare", ".") != 0:
            return dict.fromkeys(source.compare, CommitRelation.UNKNOWN)
        if await git_ok("remote", "add", "origin", source.url) != 0:
            return dict.fromkeys(source.compare, CommitRelation.UNKNOWN)
        if await git_ok(*fetch_args, "origin", source.commit) != 0:
            return dict.fromkeys(source.compare, CommitRelation.UNKNOWN)
        for other in dict.fromkeys(source.compare):
            if other == source.commit:
                relations[other] = CommitRelation.SAME
            elif not _SHA.match(other) or await git_ok(*fetch_args, "origin", other) != 0:
                relations[other] = CommitRelation.UNKNOWN
            elif await git_ok("merge-base", "--is-ancestor", other, source.commit) == 0:
                relations[other] = CommitRelation.DESCENDANT
            elif await git_ok("merge-base", "--is-ancestor", source.commit, other) == 0:
                relations[other] = CommitRelation.ANCESTOR
            else:
                relations[other] = CommitRelation.UNRELATED
    finally:
        shutil.rmtree(g.private, ignore_errors=True)
    return relations


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _chown(uid: int | None, *paths: Path) -> None:
    if uid is None:
        return
    for path in paths:
        os.chown(path, uid, uid)
