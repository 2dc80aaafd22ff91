"""The short status pages the router answers itself (pure, built once).

They never echo the request (no host, no path): nothing about other apps or the platform leaks,
and nothing a client sends is reflected back.
"""

from __future__ import annotations

from functools import cache

_REASONS = {
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

MESSAGES = {
    "bad-request": (400, "The request was malformed."),
    "unknown-host": (404, "There is no app at this address."),
    "no-host": (404, "There is no app at this address."),
    "no-current-deployment": (404, "This environment has no live deployment yet."),
    "building": (503, "This deployment is still building. Try again in a moment."),
    "failed": (502, "This deployment failed to build, so there is nothing to serve."),
    "waking-busy": (503, "This app is starting and too many requests are waiting. Retry shortly."),
    "waking-timeout": (503, "This app did not start in time. Retry shortly."),
    "unavailable": (503, "This app cannot serve requests right now. Retry shortly."),
    "upstream-error": (502, "The app closed the connection or sent an invalid response."),
    "connect-failed": (502, "The app could not be reached."),
    "connect-timeout": (504, "The app could not be reached in time."),
    "first-byte-timeout": (504, "The app did not answer in time."),
    "head-timeout": (408, "The request head was not received in time."),
}

RETRY_AFTER = {"building": 5, "waking-busy": 2, "waking-timeout": 5, "unavailable": 5}


@cache
def page(status: int, text: str, *, close: bool, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response with a small HTML body."""
    reason = _REASONS.get(status, "Error")
    body = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{status} {reason}</title></head>"
        f"<body><h1>{status} {reason}</h1><p>{text}</p></body></html>\n"
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: text/html; charset=utf-8",
        f"content-length: {len(body)}",
        "cache-control: no-store",
    ]
    if retry_after is not None:
        lines.append(f"retry-after: {retry_after}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def named_page(name: str, *, close: bool) -> tuple[int, bytes]:
    """The status and bytes of one of the router's named pages."""
    status, text = MESSAGES[name]
    return status, page(status, text, close=close, retry_after=RETRY_AFTER.get(name))


def reject_page(status: int, reason: str) -> bytes:
    """The answer to a refused request head; always closes the connection."""
    return page(status, reason[:1].upper() + reason[1:] + ".", close=True)


def redirect_page(location: bytes, *, close: bool) -> bytes:
    """308 to ``location`` (the same request over HTTPS: the method and body are kept)."""
    lines = [
        b"HTTP/1.1 308 Permanent Redirect",
        b"location: " + location,
        b"content-length: 0",
        b"cache-control: no-store",
    ]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def plain_text(body: bytes, *, close: bool) -> bytes:
    """200 with a text/plain body (ACME HTTP-01 key authorizations)."""
    lines = [
        b"HTTP/1.1 200 OK",
        b"content-type: text/plain",
        b"content-length: %d" % len(body),
        b"cache-control: no-store",
    ]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
