"""The strict request-head validator and the chunked decoder (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phemeral.router.chunked import ChunkedDecoder, ChunkError
from phemeral.router.head import (
    Reject,
    RequestHead,
    find_head_end,
    parse_request_head,
    parse_response_head,
)


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


def ok(raw: bytes) -> RequestHead:
    parsed = parse_request_head(raw)
    assert isinstance(parsed, RequestHead), parsed
    return parsed


def test_plain_get() -> None:
    parsed = ok(head(b"GET /a?b=1 HTTP/1.1", b"Host: app.example", b"Accept: */*"))
    assert (parsed.method, parsed.target, parsed.version) == (b"GET", b"/a?b=1", 11)
    assert parsed.host == b"app.example"
    assert parsed.keep_alive and not parsed.has_body
    assert parsed.forward_headers == b"Accept: */*\r\n"


def test_hop_by_hop_and_spoofable_headers_are_not_forwarded() -> None:
    parsed = ok(
        head(
            b"POST / HTTP/1.1",
            b"Host: a",
            b"Connection: close, X-Secret",
            b"X-Secret: 1",
            b"Keep-Alive: 5",
            b"X-Forwarded-For: 6.6.6.6",
            b"Forwarded: for=6.6.6.6",
            b"X-Real-IP: 6.6.6.6",
            b"X-Forwarded-Host: evil",
            b"Proxy-Authorization: x",
            b"TE: trailers",
            b"Content-Length: 3",
            b"X-Kept: yes",
        )
    )
    assert parsed.forward_headers == b"X-Kept: yes\r\n"
    assert not parsed.keep_alive
    assert parsed.content_length == 3


def test_absolute_form_routes_on_the_authority() -> None:
    parsed = ok(head(b"GET http://b.example:8000/x?y HTTP/1.1", b"Host: a.example"))
    assert parsed.host == b"b.example:8000"
    assert parsed.target == b"/x?y"
    assert ok(head(b"GET https://b.example HTTP/1.1", b"Host: a")).target == b"/"


def test_websocket_upgrade_is_recognised() -> None:
    parsed = ok(
        head(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: WebSocket")
    )
    assert parsed.upgrade == b"websocket"
    assert (
        ok(head(b"GET / HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: h2c")).upgrade
        is None
    )


def test_http10_closes_and_may_lack_host() -> None:
    parsed = ok(head(b"GET / HTTP/1.0"))
    assert parsed.host is None and not parsed.keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            head(
                b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5", b"Transfer-Encoding: chunked"
            ),
            400,
        ),
        (
            head(
                b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 5"
            ),
            400,
        ),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5", b"Content-Length: 5"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5", b"Content-Length: 6"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5, 5"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: +5"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: -1"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 0x10"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: gzip"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked, gzip"), 400),
        (head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: gzip, chunked"), 501),
        (
            head(
                b"POST / HTTP/1.1",
                b"Host: a",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: chunked",
            ),
            501,
        ),
        (head(b"POST / HTTP/1.0", b"Host: a", b"Transfer-Encoding: chunked"), 400),
        (head(b"GET / HTTP/1.1"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"host: a"), 400),
        (head(b"GET / HTTP/1.1", b"Host: u@a"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a, b"), 400),
        (head(b"GET / HTTP/1.1", b"Host:"), 400),
        (head(b"GET / HTTP/1.1", b"Host : a"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1", b" folded"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1", b"\tfolded"), 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n", 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"X-A: 1\x00"), 400),
        (head(b"GET / HTTP/1.1", b"Host: a", b"X-A: \x01"), 400),
        (head(b"GET /\x7f HTTP/1.1", b"Host: a"), 400),
        (head(b"GET / HTTP/1.1 extra", b"Host: a"), 400),
        (head(b"GET  / HTTP/1.1", b"Host: a"), 400),
        (head(b"GET / HTTP/2.0", b"Host: a"), 505),
        (head(b"GET / FTP/1.1", b"Host: a"), 400),
        (head(b"G(T / HTTP/1.1", b"Host: a"), 400),
        (head(b"CONNECT a:443 HTTP/1.1", b"Host: a"), 405),
        (head(b"GET ftp://a/x HTTP/1.1", b"Host: a"), 400),
        (head(b"GET http://u@a/x HTTP/1.1", b"Host: a"), 400),
        (head(b"GET * HTTP/1.1", b"Host: a"), 400),
        (head(b"GET /" + b"a" * 9000 + b" HTTP/1.1", b"Host: a"), 414),
        (head(b"GET / HTTP/1.1", b"Host: a", b"X: " + b"a" * 9000), 431),
        (head(b"GET / HTTP/1.1", b"Host: a", *[b"X-%d: 1" % i for i in range(101)]), 431),
    ],
)
def test_ambiguous_heads_are_refused(raw: bytes, status: int) -> None:
    parsed = parse_request_head(raw)
    assert isinstance(parsed, Reject), parsed
    assert parsed.status == status


def test_find_head_end() -> None:
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest") == 27
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1
    assert find_head_end(b"GET / HTTP/1.1\nHost: a\n\n") == -2


def test_response_heads() -> None:
    parsed = parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert parsed is not None and parsed.clean and parsed.keep_alive and parsed.content_length == 5
    parsed = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    assert parsed is not None and not parsed.clean and not parsed.keep_alive
    assert (
        parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n")
        is None
    )
    assert parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n") is None
    assert parse_response_head(b"SMTP/1.1 200 OK\r\n\r\n") is None


def decode_all(data: bytes, step: int) -> tuple[bytes, int]:
    decoder = ChunkedDecoder()
    out = b""
    used_total = 0
    for start in range(0, len(data), step):
        pieces, used = decoder.feed(data[start : start + step])
        out += b"".join(pieces)
        used_total += used
        if decoder.done:
            break
    assert decoder.done
    return out, used_total


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=8), st.integers(1, 20))
def test_chunked_roundtrip_in_any_split(pieces: list[bytes], step: int) -> None:
    encoded = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\nT: 1\r\n\r\n"
    out, used = decode_all(encoded + b"NEXT", step)
    assert out == b"".join(pieces)
    assert used == len(encoded)


@pytest.mark.parametrize(
    "data",
    [
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"zz\r\n",
        b"5;a\x00\r\nhello\r\n",
        b"0\r\n bad\r\n\r\n",
        b"1" * 5000,
    ],
)
def test_bad_chunked_framing_is_refused(data: bytes) -> None:
    with pytest.raises(ChunkError):
        ChunkedDecoder().feed(data)


_names = st.sampled_from(
    [b"Host", b"host", b"HOST", b"Content-Length", b"Transfer-Encoding", b"Connection",
     b"Upgrade", b"X-Forwarded-For", b"Forwarded", b"Accept", b"X-Custom", b"Te", b"Keep-Alive",
     b"Cookie", b"X-Drop", b"Host ", b"Ho st"]
)  # fmt: skip
_values = st.sampled_from(
    [b"a.example", b"5", b"chunked", b"close", b"keep-alive, X-Drop", b"websocket", b"u@a",
     b"", b" spaced ", b"1.2.3.4", b"a, b", b"gzip, chunked", b"\x01", b"caf\xc3\xa9"]
)  # fmt: skip


@given(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"G\x01T"]),
    st.sampled_from([b"/", b"/a?b=c", b"/\xff", b"*", b"http://b.example/x"]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]),
    st.lists(st.tuples(_names, _values), max_size=6),
)
def test_fast_path_agrees_with_the_line_by_line_parser(
    method: bytes, target: bytes, version: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    from phemeral.router.head import _parse_request_general

    raw = b"%s %s %s\r\n" % (method, target, version)
    raw += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    fast = parse_request_head(raw)
    general = _parse_request_general(raw)
    if isinstance(general, Reject):
        assert isinstance(fast, Reject)
        assert fast.status == general.status
    else:
        assert fast == general


def test_access_message_leaves_out_the_query() -> None:
    from phemeral.router.access_log import access_message

    assert (
        access_message(b"GET", b"/a/b?token=x", 200, 123, 1.234, None) == "GET /a/b 200 123B 1.2ms"
    )
    assert access_message(b"POST", b"/", 503, 0, 30000.0, 340.04).endswith(" wake 340.0ms")


@pytest.mark.parametrize(
    "fields",
    [
        [b"Host: a.example", b"Connection: keep-alive", b"Content-Length: 5"],
        [
            b"Host: a.example",
            b"Accept: */*",
            b"Connection: keep-alive",
            b"X: y",
            b"Content-Length: 9",
        ],
        [b"Accept: */*", b"connection:keep-alive ", b"Host: a.example", b"X-A: b"],
        [b"Content-Length: 12", b"Host: a.example", b"Connection: Keep-Alive", b"User-Agent: x"],
        [b"Host: a.example", b"X-Note: connection: keep-alive", b"Content-Length: 0"],
        [b"Host: a.example", b"Content-Length: 5", b"content-length: 5"],
        [b"Content-Length: 5", b"Host: a.example", b"Content-Length: 6"],
    ],
)
def test_plain_requests_with_keep_alive_and_length_agree_with_the_general_parser(
    fields: list[bytes],
) -> None:
    from phemeral.router.head import _parse_request_general

    raw = b"POST /x HTTP/1.1\r\n" + b"".join(field + b"\r\n" for field in fields) + b"\r\n"
    assert parse_request_head(raw) == _parse_request_general(raw)
