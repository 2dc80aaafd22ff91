"""Strict HTTP/1.1 message heads (pure): validate what clients send, read what apps answer.

Parser libraries accept inputs that let two HTTP implementations disagree about where a request
ends or which host it is for (request smuggling, Host confusion). So every request head is
checked here first, against RFC 9112, and refused with the status to answer (always followed by
closing the connection) when it is ambiguous:

- conflicting ``Content-Length`` and ``Transfer-Encoding``, duplicate or non-digit
  ``Content-Length``, ``Transfer-Encoding`` not ending in ``chunked`` or sent with HTTP/1.0;
- missing or duplicate ``Host`` on HTTP/1.1, a Host with userinfo or invalid characters;
- obsolete line folding, bare CR or LF, NUL or other control characters, spaces before the colon;
- oversized heads (431) and long targets (414);
- absolute-form targets: the authority is the host, the target forwarded in origin-form.

What comes out is a `RequestHead` whose ``forward_headers`` are the end-to-end header lines only
(hop-by-hop and client-supplied ``X-Forwarded-*``/``Forwarded``/``X-Real-IP`` removed), so the
proxy re-frames every request it forwards and never relays a client's raw head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_TARGET_BYTES = 8 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_HEADERS = 100

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset(b"0123456789")
# Field values: visible ASCII, SP, HTAB and obs-text (bytes >= 0x80 are opaque to us).
_BAD_VALUE = frozenset(range(0x20)) - {0x09} | {0x7F}
_BAD_TARGET = frozenset(range(0x21)) | frozenset(range(0x7F, 0x100))
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
    }
)


@dataclass(frozen=True, slots=True)
class Reject:
    """The request is refused: answer ``status`` and close the connection."""

    status: int
    reason: str


@dataclass(slots=True)
class RequestHead:
    """A validated request head (treated as immutable; not frozen, which is slower to build)."""

    method: bytes
    target: bytes  # origin-form (or ``*``), ready to forward
    version: int  # 10 or 11
    host: bytes | None  # raw host to route on (Host value, or the absolute-form authority)
    content_length: int | None
    chunked: bool
    keep_alive: bool  # the client allows another request on this connection
    upgrade: bytes | None  # ``websocket`` when the client asks for a WebSocket upgrade
    forward_headers: bytes  # end-to-end header lines, each ending in CRLF

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending a head, -1 when incomplete, -2 on a bare LF."""
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    if b"\n\n" in buffer or b"\r\r" in buffer:
        return -2
    return -1


_TOKEN_RE = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE_RE = rb"[\t\x20-\x7e\x80-\xff]*"
_FIELDS_RE = rb"((?:" + _TOKEN_RE + rb":" + _VALUE_RE + rb"\r\n)*)\r\n"
# The common, well-formed case in one C-speed match: origin-form target, HTTP/1.x, fields that
# are name:value lines with no obs-fold, bare CR/LF or control characters. Anything else goes
# through `_parse_request_general`, which also says precisely what is wrong.
_REQUEST_RE = re.compile(
    rb"(" + _TOKEN_RE + rb") (/[\x21-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS_RE, re.DOTALL
)
_HOP_NAMES_RE = rb"|".join(re.escape(name) for name in sorted(_HOP_BY_HOP))
# A field line that is not hop-by-hop (the name is followed by the colon, so `te` is not `tea`),
# or `Connection: keep-alive` (which changes nothing in HTTP/1.1 and is not forwarded).
_PLAIN_LINE = (
    rb"(?:(?!(?i:" + _HOP_NAMES_RE + rb"):)" + _TOKEN_RE + rb":[\t\x20-\x7e\x80-\xff]*+\r\n"
    rb"|((?i:connection):[ \t]*+(?i:keep-alive)[ \t]*+\r\n)"
    rb"|(?i:content-length):[ \t]*+([0-9]{1,18})[ \t]*+\r\n)"
)
# (The repeats holding capturing groups are not possessive: CPython 3.11's re fails on those.)
# The usual request: HTTP/1.1, origin-form, one Host of visible ASCII without `,` or `@`, and no
# other hop-by-hop field than `Connection: keep-alive` and a valid `Content-Length`. Groups:
# method, target, the lines before Host, (whether they hold a Connection line, the value of a
# Content-Length line), the Host value, the lines after Host and the same two.
_PLAIN_REQUEST_RE = re.compile(
    rb"(" + _TOKEN_RE + rb") (/[\x21-\x7e]*+) HTTP/1\.1\r\n((?:" + _PLAIN_LINE + rb")*)"
    rb"(?i:host):[ \t]*+([\x21-\x2b\x2d-\x3f\x41-\x7e]++)[ \t]*+\r\n"
    rb"((?:" + _PLAIN_LINE + rb")*)\r\n"
)
# The lines of a plain request that are not forwarded, found with the CRLF before them.
_DROPPED_LINE_RE = re.compile(
    rb"\r\n(?:(?i:connection):[ \t]*+(?i:keep-alive)|(?i:content-length):[ \t]*+[0-9]{1,18})"
    rb"[ \t]*+(?=\r\n)"
)


def parse_request_head(head: bytes) -> RequestHead | Reject:
    """Validate one request head (request line to blank line, CRLFs included)."""
    size = len(head)
    if size <= MAX_HEADER_LINE and head.count(b"\n") <= MAX_HEADERS + 2:
        # Small enough that no target or field line can be over its limit.
        plain = _PLAIN_REQUEST_RE.fullmatch(head)
        if plain is not None:
            method, target, before, conn_b, length_b, host, after, conn_a, length_a = plain.groups()
            if conn_b is None and length_b is None and conn_a is None and length_a is None:
                return RequestHead(
                    method, target, 11, host, None, False, True, None, before + after
                )
            parsed = _conclude_plain(head, plain)
            if parsed is not None:
                return parsed
    elif size > MAX_HEAD_BYTES:
        return Reject(431, "request head too large")
    match = _REQUEST_RE.fullmatch(head)
    if match is None:
        return _parse_request_general(head)
    method, target, minor, fields = match.groups()
    if len(target) > MAX_TARGET_BYTES:
        return Reject(414, "request target too long")
    if len(head) > MAX_HEADER_LINE and any(
        len(line) > MAX_HEADER_LINE for line in fields.split(b"\r\n")
    ):
        return Reject(431, "header field too large")
    if fields.count(b"\n") > MAX_HEADERS:
        return Reject(431, "too many header fields")
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    upgrade_value: bytes | None = None
    lines = fields.split(b"\r\n")
    lines.pop()  # after the last CRLF
    dropped = 0
    for index, line in enumerate(lines):
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in _HOP_BY_HOP:
            continue
        lines[index] = b""
        dropped += 1
        value = value.strip(b" \t")
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif name == b"connection":
            connection.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif name == b"upgrade":
            upgrade_value = value
    if not dropped:
        forward = fields
    elif dropped == len(lines):
        forward = b""
    elif dropped == 1 and not lines[0]:
        forward = fields[fields.index(b"\r\n") + 2 :]  # Host first: the usual case
    else:
        forward = b"".join(line + b"\r\n" for line in lines if line)
    if dropped == 1 and len(hosts) == 1 and minor == b"1":  # a plain request: only Host is ours
        host = hosts[0]
        if host and b"@" not in host and b"," not in host:
            return RequestHead(method, target, 11, host, None, False, True, None, forward)
    return _conclude(
        method,
        target,
        11 if minor == b"1" else 10,
        None,
        hosts,
        lengths,
        codings,
        connection,
        upgrade_value,
        forward,
    )


def _conclude_plain(head: bytes, plain: re.Match[bytes]) -> RequestHead | None:
    """The `RequestHead` of a request `_PLAIN_REQUEST_RE` matched; None when it holds more than
    one Content-Length (the general checks refuse it)."""
    method, target, before, dropped_before, length_before = plain.group(1, 2, 3, 4, 5)
    host, after, dropped_after, length_after = plain.group(6, 7, 8, 9)
    content_length = None
    length = length_before if length_after is None else length_after
    if length is not None:
        if length_before is not None and length_after is not None:
            return None
        if head.lower().count(b"content-length:") != 1:
            return None
        content_length = int(length)
    if dropped_before is not None or length_before is not None:
        before = _DROPPED_LINE_RE.sub(b"", b"\r\n" + before)[2:]
    if dropped_after is not None or length_after is not None:
        after = _DROPPED_LINE_RE.sub(b"", b"\r\n" + after)[2:]
    return RequestHead(method, target, 11, host, content_length, False, True, None, before + after)


def _parse_request_general(head: bytes) -> RequestHead | Reject:
    """The line-by-line parser: absolute-form and asterisk-form targets, and precise reasons."""
    if b"\x00" in head:
        return Reject(400, "NUL byte in request head")
    lines = head[:-4].split(b"\r\n") if head.endswith(b"\r\n\r\n") else None
    if lines is None:
        return Reject(400, "request head does not end with CRLF CRLF")
    request_line = lines[0]
    if b"\r" in request_line or b"\n" in request_line:
        return Reject(400, "bare CR or LF in request line")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        if len(request_line) > MAX_TARGET_BYTES:
            return Reject(414, "request target too long")
        return Reject(400, "malformed request line")
    method, target, version_text = parts
    if not method or not _TOKEN.issuperset(method):
        return Reject(400, "malformed method")
    if version_text == b"HTTP/1.1":
        version = 11
    elif version_text == b"HTTP/1.0":
        version = 10
    elif version_text.startswith(b"HTTP/"):
        return Reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    else:
        return Reject(400, "malformed request line")
    if len(target) > MAX_TARGET_BYTES:
        return Reject(414, "request target too long")
    if not target or not _BAD_TARGET.isdisjoint(target):
        return Reject(400, "invalid characters in request target")
    if method == b"CONNECT":
        return Reject(405, "CONNECT is not supported")
    authority: bytes | None = None
    if target[0] != 0x2F:  # not "/"
        if target == b"*":
            if method != b"OPTIONS":
                return Reject(400, "asterisk-form is only valid for OPTIONS")
        else:
            scheme, sep, rest = target.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                return Reject(400, "request target must be origin-form or http(s) absolute-form")
            cut = len(rest)
            for stop in (b"/", b"?", b"#"):
                index = rest.find(stop)
                if 0 <= index < cut:
                    cut = index
            authority = rest[:cut]
            path = rest[cut:]
            if not authority or b"@" in authority:
                return Reject(400, "invalid authority in request target")
            if path.startswith(b"?"):
                path = b"/" + path
            target = path or b"/"
            if target.startswith(b"#"):
                target = b"/"

    if len(lines) - 1 > MAX_HEADERS:
        return Reject(431, "too many header fields")
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    upgrade_value: bytes | None = None
    kept: list[bytes] = []
    for index in range(1, len(lines)):
        line = lines[index]
        if len(line) > MAX_HEADER_LINE:
            return Reject(431, "header field too large")
        if not line:
            return Reject(400, "empty header line")
        first = line[0]
        if first == 0x20 or first == 0x09:
            return Reject(400, "obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or not name:
            return Reject(400, "malformed header field")
        if not _TOKEN.issuperset(name):
            return Reject(400, "invalid header field name")
        value = value.strip(b" \t")
        if not _BAD_VALUE.isdisjoint(value):
            return Reject(400, "invalid character in header field value")
        lname = name.lower()
        if lname not in _HOP_BY_HOP:
            kept.append(line + b"\r\n")
            continue
        if lname == b"host":
            hosts.append(value)
        elif lname == b"content-length":
            lengths.append(value)
        elif lname == b"transfer-encoding":
            codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lname == b"connection":
            connection.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lname == b"upgrade":
            upgrade_value = value
    return _conclude(
        method,
        target,
        version,
        authority,
        hosts,
        lengths,
        codings,
        connection,
        upgrade_value,
        b"".join(kept),
    )


def _conclude(
    method: bytes,
    target: bytes,
    version: int,
    authority: bytes | None,
    hosts: list[bytes],
    lengths: list[bytes],
    codings: list[bytes],
    connection: list[bytes],
    upgrade_value: bytes | None,
    forward: bytes,
) -> RequestHead | Reject:
    """The checks on framing and Host shared by both parsers."""
    if len(hosts) > 1:
        return Reject(400, "more than one Host header")
    host: bytes | None = hosts[0] if hosts else None
    if host is not None and (not host or b"@" in host or b"," in host):
        return Reject(400, "invalid Host header")
    if version == 11 and host is None:
        return Reject(400, "HTTP/1.1 request without Host")
    if authority is not None:
        host = authority
    content_length: int | None = None
    chunked = False
    if codings:
        if version == 10:
            return Reject(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if lengths:
            return Reject(400, "both Content-Length and Transfer-Encoding")
        if codings[-1] != b"chunked":
            return Reject(400, "Transfer-Encoding must end with chunked")
        if codings != [b"chunked"]:
            return Reject(501, "only the chunked transfer coding is supported")
        chunked = True
    elif lengths:
        if len(lengths) > 1:
            return Reject(400, "more than one Content-Length")
        text = lengths[0]
        if not text or len(text) > 18 or not _DIGITS.issuperset(text):
            return Reject(400, "invalid Content-Length")
        content_length = int(text)
    keep_alive = b"close" not in connection if version == 11 else False
    upgrade = None
    if (
        upgrade_value is not None
        and b"upgrade" in connection
        and upgrade_value.lower() == b"websocket"
        and version == 11
    ):
        upgrade = b"websocket"
    if connection:
        # Fields named in Connection are hop-by-hop too.
        named = {c for c in connection if c and c not in (b"close", b"keep-alive", b"upgrade")}
        if named:
            forward = b"".join(
                line + b"\r\n"
                for line in forward.split(b"\r\n")
                if line and line.partition(b":")[0].lower() not in named
            )
    return RequestHead(
        method, target, version, host, content_length, chunked, keep_alive, upgrade, forward
    )


@dataclass(slots=True)
class ResponseHead:
    """An app's response head, as far as framing goes (treated as immutable)."""

    status: int
    version: int
    content_length: int | None
    chunked: bool
    keep_alive: bool  # the app allows reusing its connection
    clean: bool  # no hop-by-hop fields: the head can be relayed byte for byte
    raw: bytes  # the head as received, for re-serialising


_RESPONSE_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
_RESPONSE_RE = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: " + _VALUE_RE + rb")?\r\n" + _FIELDS_RE, re.DOTALL
)
# The usual response: HTTP/1.x, one valid Content-Length and no other framing or hop-by-hop field.
# Groups: minor version, status code, content length.
_PLAIN_RESPONSE_LINE = (
    rb"(?!(?i:content-length|transfer-encoding|"
    + rb"|".join(sorted(_RESPONSE_HOP))
    + rb"):)"
    + _TOKEN_RE
    + rb":[\t\x20-\x7e\x80-\xff]*+\r\n"
)
_PLAIN_RESPONSE_RE = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*+)?\r\n(?:" + _PLAIN_RESPONSE_LINE
    + rb")*+(?i:content-length):[ \t]*+([0-9]{1,18})[ \t]*+\r\n(?:" + _PLAIN_RESPONSE_LINE
    + rb")*+\r\n"
)  # fmt: skip
_RESPONSE_SPECIAL_RE = re.compile(
    rb"\n(content-length|transfer-encoding|" + rb"|".join(sorted(_RESPONSE_HOP)) + rb"):([^\r]*)"
)


# ``match_plain_response(data, 0, end)``: the plain-response match of the head ``data[:end]``
# without copying it (groups: minor version, status code, content length).
match_plain_response = _PLAIN_RESPONSE_RE.fullmatch


def parse_response_head(head: bytes) -> ResponseHead | None:
    """Read an app's response head; None when it is malformed (the proxy answers 502)."""
    plain = _PLAIN_RESPONSE_RE.fullmatch(head)
    if plain is not None:
        minor, code, length = plain.groups()
        version = 11 if minor == b"1" else 10
        return ResponseHead(int(code), version, int(length), False, version == 11, True, head)
    match = _RESPONSE_RE.fullmatch(head)
    if match is None:
        return None
    minor, code, fields = match.groups()
    version = 11 if minor == b"1" else 10
    specials = _RESPONSE_SPECIAL_RE.findall(b"\n" + fields.lower())
    if len(specials) == 1 and specials[0][0] == b"content-length":  # the usual response
        text = specials[0][1].strip(b" \t")
        if 0 < len(text) <= 18 and text.isdigit():
            return ResponseHead(int(code), version, int(text), False, version == 11, True, head)
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    clean = True
    for name, raw_value in specials:
        value = raw_value.strip(b" \t")
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.extend(c.strip(b" \t") for c in value.split(b","))
        else:
            clean = False
            if name == b"connection":
                connection.extend(c.strip(b" \t") for c in value.split(b","))
    content_length: int | None = None
    chunked = False
    if codings:
        if codings[-1] != b"chunked":
            return None  # would be close-delimited with an encoding we cannot frame
        chunked = True
        if lengths:
            clean = False  # Content-Length is dropped when Transfer-Encoding is present
    elif lengths:
        if len(set(lengths)) != 1:
            return None
        text = lengths[0]
        if not text or len(text) > 18 or not _DIGITS.issuperset(text):
            return None
        content_length = int(text)
    keep_alive = b"close" not in connection if version == 11 else b"keep-alive" in connection
    return ResponseHead(int(code), version, content_length, chunked, keep_alive, clean, head)


def rebuild_response_head(
    head: ResponseHead,
    *,
    close: bool,
    upgrade: bool = False,
    dechunk: bool = False,
    version: int = 11,
) -> bytes:
    """Serialise ``head`` without hop-by-hop fields, adding our own Connection field if needed.

    ``dechunk`` drops the framing fields: the body is relayed decoded and delimited by closing
    the connection (for HTTP/1.0 clients, which cannot read chunked bodies).
    """
    lines = head.raw[:-4].split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        lname = line.partition(b":")[0].lower()
        if lname in _RESPONSE_HOP:
            if upgrade and lname == b"upgrade":
                out.append(line)
            continue
        if lname == b"content-length" and head.chunked:
            continue
        if dechunk and lname == b"transfer-encoding":
            continue
        out.append(line)
    if upgrade:
        out.append(b"connection: upgrade")
    elif close:
        out.append(b"connection: close")
    elif version == 10:
        out.append(b"connection: keep-alive")
    return b"\r\n".join(out) + b"\r\n\r\n"
