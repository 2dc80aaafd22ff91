"""Signed sessions and CSRF tokens: forged, expired or cross-session values are refused."""

import os
from pathlib import Path

import pytest

from phemeral.dashboard.routes import AdminTokenFile
from phemeral.dashboard.session import (
    csrf_token,
    csrf_valid,
    issue_session,
    read_session,
    session_key,
    token_matches,
)
from phemeral.errors import ConfigError

KEY = session_key("admin-token-1")
NOW = 1_800_000_000.0


def test_a_session_reads_back_until_it_expires() -> None:
    cookie = issue_session(KEY, "nonce1", NOW, ttl=60)
    session = read_session(KEY, cookie, NOW + 59)
    assert session is not None and session.nonce == "nonce1"
    assert read_session(KEY, cookie, NOW + 60) is None


def test_a_tampered_or_foreign_cookie_is_refused() -> None:
    cookie = issue_session(KEY, "nonce1", NOW, ttl=60)
    expires, nonce, mac = cookie.split(".")
    assert read_session(KEY, f"{int(expires) + 999}.{nonce}.{mac}", NOW) is None
    assert read_session(KEY, f"{expires}.other.{mac}", NOW) is None
    assert read_session(session_key("another-token"), cookie, NOW) is None
    for junk in ("", "x", "a.b", "a.b.c.d", f"nope.{nonce}.{mac}"):
        assert read_session(KEY, junk, NOW) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    token = csrf_token(KEY, "nonce1")
    assert csrf_valid(KEY, "nonce1", token)
    assert not csrf_valid(KEY, "nonce2", token)
    assert not csrf_valid(KEY, "nonce1", token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not csrf_valid(KEY, "nonce1", None)
    assert not csrf_valid(KEY, None, token)
    assert not csrf_valid(session_key("another-token"), "nonce1", token)


def test_token_comparison() -> None:
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc")
    assert not token_matches("ab", "abc")


def test_replacing_the_admin_token_signs_everyone_out(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("first-token\n")
    token = AdminTokenFile(path)
    assert token() == "first-token"
    cookie = issue_session(session_key(token()), "n", NOW)
    path.write_text("second-token\n")
    os.utime(path, (NOW + 10, NOW + 10))  # a new mtime, even within the clock's resolution
    assert token() == "second-token"
    assert read_session(session_key(token()), cookie, NOW) is None
    path.write_text("")
    os.utime(path, (NOW + 20, NOW + 20))
    with pytest.raises(ConfigError, match="empty"):
        token()
