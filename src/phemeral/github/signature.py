"""Verify ``X-Hub-Signature-256``: HMAC-SHA256 of the exact raw body with the webhook secret.

Pure. The header must be exactly ``sha256=`` followed by 64 lowercase hex digits, as GitHub
sends it; anything else (missing, ``sha1=`` only, uppercase, truncated, padded with spaces) is
refused before any comparison. The comparison itself is constant-time. A project without a
secret never verifies (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from phemeral.errors import Unauthorized

PREFIX = "sha256="
_HEADER = re.compile(r"sha256=[0-9a-f]{64}")


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` signed with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def well_formed(header: str | None) -> bool:
    """True when ``header`` has GitHub's exact shape (says nothing about its validity)."""
    return header is not None and _HEADER.fullmatch(header) is not None


def signature_matches(secret: str | bytes | None, body: bytes, header: str | None) -> bool:
    """True only when ``header`` is the signature of ``body`` with a non-empty ``secret``."""
    if not secret or not well_formed(header):
        return False
    assert header is not None
    return hmac.compare_digest(sign(secret, body).encode(), header.encode())


def verify(secret: str | bytes | None, body: bytes, header: str | None) -> None:
    """Raise `Unauthorized` with a reason unless ``header`` signs ``body`` with ``secret``."""
    if not secret:
        raise Unauthorized("this project has no webhook secret; deliveries are refused")
    if header is None:
        raise Unauthorized("missing X-Hub-Signature-256 header")
    if not well_formed(header):
        raise Unauthorized(
            "malformed X-Hub-Signature-256 header (expected sha256= and 64 lowercase hex digits)"
        )
    if not signature_matches(secret, body, header):
        raise Unauthorized("X-Hub-Signature-256 does not match the body and the webhook secret")
