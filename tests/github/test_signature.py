"""X-Hub-Signature-256 verification (W1) and its one-byte-change property."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phemeral.errors import Unauthorized
from phemeral.github.signature import sign, signature_matches, verify

SECRET = "It's a Secret to Everybody"
BODY = b"Hello, World!"
# The example from GitHub's "validating webhook deliveries" page.
GITHUB_EXAMPLE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_matches_githubs_published_example() -> None:
    assert sign(SECRET, BODY) == GITHUB_EXAMPLE
    verify(SECRET, BODY, GITHUB_EXAMPLE)


@pytest.mark.parametrize(
    ("secret", "header", "why"),
    [
        (SECRET, None, "missing"),
        (SECRET, "", "malformed"),
        (SECRET, GITHUB_EXAMPLE.upper(), "malformed"),
        (SECRET, "SHA256=" + GITHUB_EXAMPLE[7:], "malformed"),
        (SECRET, GITHUB_EXAMPLE[7:], "malformed"),
        (SECRET, GITHUB_EXAMPLE[:-1], "malformed"),
        (SECRET, GITHUB_EXAMPLE + "0", "malformed"),
        (SECRET, " " + GITHUB_EXAMPLE, "malformed"),
        (SECRET, GITHUB_EXAMPLE + " ", "malformed"),
        (SECRET, "sha256= " + GITHUB_EXAMPLE[8:], "malformed"),
        (
            SECRET,
            "sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),
            "malformed",
        ),
        (SECRET, sign("another secret", BODY), "does not match"),
        (SECRET, sign(SECRET, BODY + b"\n"), "does not match"),
        (None, GITHUB_EXAMPLE, "no webhook secret"),
        ("", GITHUB_EXAMPLE, "no webhook secret"),
    ],
)
def test_refuses(secret: str | None, header: str | None, why: str) -> None:
    with pytest.raises(Unauthorized, match=why):
        verify(secret, BODY, header)
    assert not signature_matches(secret, BODY, header)


def test_uppercase_hex_of_the_right_digest_is_refused() -> None:
    good = sign(SECRET, BODY)
    assert signature_matches(SECRET, BODY, good)
    assert not signature_matches(SECRET, BODY, "sha256=" + good[7:].upper())


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    body=st.binary(max_size=512),
    data=st.data(),
)
def test_any_one_byte_change_of_body_or_signature_fails(
    secret: bytes, body: bytes, data: st.DataObject
) -> None:
    header = sign(secret, body)
    assert signature_matches(secret, body, header)
    if body and data.draw(st.booleans(), label="mutate body"):
        index = data.draw(st.integers(0, len(body) - 1), label="index")
        new = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]), label="byte")
        changed = body[:index] + bytes([new]) + body[index + 1 :]
        assert not signature_matches(secret, changed, header)
    else:
        raw = header.encode()
        index = data.draw(st.integers(0, len(raw) - 1), label="index")
        new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]), label="byte")
        forged = (raw[:index] + bytes([new]) + raw[index + 1 :]).decode("latin-1")
        assert not signature_matches(secret, body, forged)
        with pytest.raises(Unauthorized):
            verify(secret, body, forged)
