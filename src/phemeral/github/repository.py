"""Repository URLs: validate what a project may be connected to, and compare URLs by identity.

Pure. ``https://github.com/Owner/Repo``, ``https://github.com/owner/repo.git``,
``git@github.com:owner/repo.git``, ``ssh://git@github.com/owner/repo`` and ``git://…`` all name
the same repository, so they share one `repository_key`. Local paths and ``file://`` URLs are
accepted only when the server allows local repositories; their key is the normalised path.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote, urlsplit

from phemeral.errors import InvalidInput

_SCP_LIKE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$"
)
_FULL_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REMOTE_SCHEMES = ("https", "http", "ssh", "git")
MAX_URL_LENGTH = 2048


def is_local(url: str) -> bool:
    """True for filesystem paths and ``file://`` URLs."""
    text = url.strip()
    return text.startswith(("/", "./", "../", "~")) or text.lower().startswith("file:")


def _local_path(url: str) -> str:
    text = url.strip()
    if text.lower().startswith("file:"):
        text = unquote(urlsplit(text).path)
    normalised = posixpath.normpath(text)
    return normalised.rstrip("/") or "/"


def _remote_parts(url: str) -> tuple[str, str] | None:
    """(lowercase host, path without slashes or ``.git``) of a remote URL, or None."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() in _REMOTE_SCHEMES and parts.hostname:
        host, path = parts.hostname.lower(), unquote(parts.path)
    else:
        scp = _SCP_LIKE.match(text)
        if scp is None or "://" in text:
            return None
        host, path = scp.group("host").lower(), scp.group("path")
    path = path.strip("/")
    if path.lower().endswith(".git"):
        path = path[:-4]
    path = path.rstrip("/")
    if not path:
        return None
    return host, path


def repository_key(url: str) -> str | None:
    """A comparable identity for a repository URL, or None when it is not one.

    Remote URLs become ``host/path`` (case-folded, since GitHub names are case-insensitive);
    local ones become ``file://`` plus the normalised absolute or relative path.
    """
    if not url or not url.strip():
        return None
    if is_local(url):
        return "file://" + _local_path(url)
    parts = _remote_parts(url)
    if parts is None:
        return None
    host, path = parts
    return f"{host}/{path.lower()}"


def github_full_name(url: str) -> str | None:
    """``owner/repo`` when ``url`` is a github.com repository URL, else None."""
    parts = _remote_parts(url) if not is_local(url) else None
    if parts is None or parts[0] not in ("github.com", "www.github.com"):
        return None
    path = parts[1]
    return path if _FULL_NAME.match(path) else None


def hosted_full_name(url: str) -> str | None:
    """``owner/repo`` of a repository on any GitHub host (github.com or GitHub Enterprise
    Server: ``https://ghe.example.com/owner/repo``), when the URL's path is exactly that."""
    parts = _remote_parts(url) if not is_local(url) else None
    if parts is None:
        return None
    return parts[1] if _FULL_NAME.match(parts[1]) else None


def validate_repo_url(url: str, *, allow_local: bool) -> str:
    """Return ``url`` stripped, or raise `InvalidInput` saying why it cannot be deployed from.

    Deployable: https (or http) URLs, which the builder fetches, with the project's token for
    private repositories; local paths and ``file://`` only with ``allow_local`` (the server's
    ``--allow-local-repos``). ssh and ``git@`` forms still name a repository (see
    `repository_key`) but cannot be fetched. Credentials embedded in the URL are refused: a
    token is stored apart, encrypted.
    """
    text = url.strip()
    if not text:
        raise InvalidInput("repository URL is empty")
    if len(text) > MAX_URL_LENGTH or any(ord(c) < 32 or c == "\x7f" for c in text):
        raise InvalidInput("repository URL is too long or contains control characters")
    if text.startswith("-"):
        raise InvalidInput("repository URL must not start with '-'")
    if is_local(text):
        if not allow_local:
            raise InvalidInput(
                f"local repository {text!r} is refused: start the server with "
                "--allow-local-repos to deploy from local paths or file:// URLs"
            )
        return text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("https", "http"):
        raise InvalidInput(
            f"repository {text!r} cannot be fetched: use its https URL "
            "(e.g. https://github.com/OWNER/REPO) and an access token for a private one"
        )
    if parts.username or parts.password:
        raise InvalidInput(
            "repository URL must not embed credentials; set the project's access token instead"
        )
    if _remote_parts(text) is None:
        raise InvalidInput(
            f"{text!r} is not a repository URL (expected e.g. https://github.com/OWNER/REPO)"
        )
    return text
