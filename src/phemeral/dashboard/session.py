"""Dashboard sessions and CSRF tokens, as pure functions over a secret key and `now`.

A session is a signed cookie value ``{expires}.{nonce}.{mac}``; nothing is stored server-side.
The key is derived from the admin token (`session_key`), so replacing the token signs everyone
out. A CSRF token is a MAC of the session nonce (or, before sign-in, of a short-lived login
nonce), so a form posted from another site cannot carry a valid one. Every comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "phemeral_session"
LOGIN_COOKIE = "phemeral_login"
SESSION_TTL_SECONDS = 12 * 3600
LOGIN_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    nonce: str
    expires_at: int


def session_key(admin_token: str) -> bytes:
    """The signing key for cookies and CSRF tokens, bound to the current admin token."""
    return hmac.new(admin_token.encode(), b"phemeral dashboard session v1", hashlib.sha256).digest()


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the real one."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _mac(key: bytes, purpose: str, text: str) -> str:
    return hmac.new(key, f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def issue_session(key: bytes, nonce: str, now: float, ttl: int = SESSION_TTL_SECONDS) -> str:
    """The cookie value of a session that expires ``ttl`` seconds after ``now``."""
    body = f"{int(now) + ttl}.{nonce}"
    return f"{body}.{_mac(key, 'session', body)}"


def read_session(key: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie value carries, or None if it is missing, forged or expired."""
    if not cookie:
        return None
    parts = cookie.split(".")
    if len(parts) != 3:
        return None
    expires, nonce, mac = parts
    if not expires.isdigit() or not nonce:
        return None
    if not hmac.compare_digest(mac, _mac(key, "session", f"{expires}.{nonce}")):
        return None
    if int(expires) <= now:
        return None
    return Session(nonce=nonce, expires_at=int(expires))


def csrf_token(key: bytes, nonce: str) -> str:
    """The token every form of this session (or login attempt) must post back."""
    return _mac(key, "csrf", nonce)


def csrf_valid(key: bytes, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token:
        return False
    return hmac.compare_digest(token, csrf_token(key, nonce))
