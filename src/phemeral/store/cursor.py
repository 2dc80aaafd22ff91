"""Opaque, stable pagination cursors (keyset: the sort key of the last item seen)."""

from __future__ import annotations

import base64
import binascii
import json

from phemeral.errors import InvalidInput

PAGE_DEFAULT = 50  # items on a page when the request names no limit
PAGE_MAX = 500  # a larger limit is lowered to this


def encode_cursor(*key: str | int) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[str | int, ...]:
    """The key encoded by `encode_cursor`, checked against the expected element types."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cursor {cursor!r} is not valid; use next_cursor as given") from exc
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(type(k) is t for k, t in zip(key, types, strict=True))
    ):
        raise InvalidInput(f"cursor {cursor!r} is not valid; use next_cursor as given")
    return tuple(key)


def clamp_limit(limit: int | None, *, default: int = PAGE_DEFAULT, maximum: int = PAGE_MAX) -> int:
    if limit is None:
        return default
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    return min(limit, maximum)
