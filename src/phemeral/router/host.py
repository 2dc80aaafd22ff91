"""Host header normalisation (pure).

A Host value is routed only after it is reduced to one canonical ASCII form: lower case, the
port split off (digits, 1-65535; IPv6 literals in brackets), exactly one trailing dot removed.
Anything else that could make two routers disagree about the name is refused: userinfo (``@``),
empty or leading-dot labels, non-ASCII bytes, characters outside letters, digits and ``-``.
"""

from __future__ import annotations

import ipaddress

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")
_DIGITS = frozenset(b"0123456789")


def normalise_host(raw: bytes) -> str | None:
    """The canonical host name in ``raw`` (a Host value or an absolute-form authority).

    Returns None when the value is not a valid host: the caller answers 400.
    """
    if not raw or len(raw) > MAX_HOST_LENGTH + 8:
        return None
    if raw.startswith(b"["):
        end = raw.find(b"]")
        if end < 0 or not _valid_port(raw[end + 1 :], bracketed=True):
            return None
        try:
            literal = raw[1:end].decode("ascii")
            address = ipaddress.IPv6Address(literal)
        except (UnicodeDecodeError, ValueError):
            return None
        return f"[{address.compressed}]"
    name, colon, port = raw.partition(b":")
    if colon and not _valid_port(b":" + port, bracketed=False):
        return None
    name = name.lower()
    if name.endswith(b"."):
        name = name[:-1]
    if not name or len(name) > MAX_HOST_LENGTH:
        return None
    for label in name.split(b"."):
        if not label or len(label) > MAX_LABEL_LENGTH or not _LABEL_CHARS.issuperset(label):
            return None
    return name.decode("ascii")


def _valid_port(rest: bytes, *, bracketed: bool) -> bool:
    """``rest`` is what follows the host: empty, or ``:`` then 1-5 digits within 1..65535."""
    if not rest:
        return True
    if not rest.startswith(b":"):
        return False
    digits = rest[1:]
    if not 1 <= len(digits) <= 5 or not _DIGITS.issuperset(digits):
        return False
    return 1 <= int(digits) <= 65535


def is_ip_literal(host: str) -> bool:
    """True for a normalised IPv4 dotted quad or bracketed IPv6 literal."""
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
