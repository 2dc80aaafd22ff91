"""Bearer tokens: stored as SHA-256 hashes, compared in constant time.

The admin token is created on first start and written to ``{data_dir}/admin-token`` (0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select

from phemeral.errors import Unauthorized
from phemeral.store.db import Store
from phemeral.store.schema import ApiToken

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105  (a file name, not a secret)
ADMIN_NAME = "admin"
TOKEN_PREFIX = "phm_"  # noqa: S105  (a public prefix that marks tokens)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(store: Store, data_dir: Path) -> Path:
    """Create the admin token on first start (file + hash); a replaced file rotates it."""
    path = data_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    token = path.read_text().strip()
    digest = hash_token(token)
    with store.write() as s:
        if s.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is None:
            # A new file (deleted or replaced by the operator) rotates the admin token.
            s.execute(delete(ApiToken).where(ApiToken.name == ADMIN_NAME))
            s.add(ApiToken(name=ADMIN_NAME, token_hash=digest, created_at=datetime.now(UTC)))
    return path


class TokenChecker:
    """Knows the token hashes; reloads them from the database when it sees an unknown one (at
    most once per `RELOAD_INTERVAL`, so a flood of wrong tokens is not a flood of queries)."""

    RELOAD_INTERVAL = 1.0

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}
        self._reloaded_at = -float("inf")

    def _reload(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._reloaded_at < self.RELOAD_INTERVAL:
                return
            self._reloaded_at = now
        with self._store.read() as s:
            known = {row.token_hash: row.name for row in s.scalars(select(ApiToken))}
        with self._lock:
            self._known = known

    def known(self, authorization: str | None) -> str | None:
        """The token's name from memory alone; None when a reload might still know it;
        `Unauthorized` when the header is missing or malformed (no reload can help)."""
        if not authorization:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        return self._match(hash_token(token.strip()))

    def actor(self, authorization: str | None) -> str:
        """The token's name, or `Unauthorized` with a message that says what is wrong."""
        name = self.known(authorization)
        if name is None:
            self._reload()
            name = self.known(authorization)
        if name is None:
            raise Unauthorized("the token is not valid for this server")
        return name

    def _match(self, digest: str) -> str | None:
        with self._lock:
            known = list(self._known.items())
        found = None
        for candidate, name in known:
            if hmac.compare_digest(candidate, digest):
                found = name
        return found
