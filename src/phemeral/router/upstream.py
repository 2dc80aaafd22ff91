"""The upstream side of the proxy: one connection to an app, relaying its responses.

`UpstreamConnection` reads the app's response head and body and writes them to the client
connection it is attached to (`phemeral.router.proxy.ClientConnection`), which it tells when the
exchange ends (`response_done`), fails (`upstream_failed`) or never started on a reused
connection (`upstream_closed_early`). Response heads pass through byte for byte when they carry no
hop-by-hop fields; bodies by exact ``Content-Length`` count, validated chunk framing (de-chunked
for HTTP/1.0 clients) or until the app closes; after a 101, bytes flow both ways untouched.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from phemeral.router.chunked import ChunkedDecoder, ChunkError
from phemeral.router.head import match_plain_response, parse_response_head, rebuild_response_head

if TYPE_CHECKING:
    from phemeral.router.exchange import Exchange
    from phemeral.router.pool import UpstreamPool
    from phemeral.router.proxy import ClientConnection

_MAX_RESPONSE_HEAD = 64 * 1024

# Response states (`UpstreamConnection.state`; the client connection sets R_HEAD on attach).
R_IDLE, R_HEAD, R_LENGTH, R_CHUNKED, R_EOF, R_TUNNEL = range(6)


class UpstreamConnection(asyncio.Protocol):
    """One connection to an app (or the control plane); carries one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.state = R_IDLE
        self.buf = bytearray()
        self.left = 0
        self.decoder: ChunkedDecoder | None = None
        self.dechunk = False
        self.reusable = False
        self.got_bytes = False

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client = self.client
        self.client = None
        if client is None:
            self.pool.discard(self.key, self)
            return
        state = self.state
        self.state = R_IDLE
        if state == R_EOF:
            client.response_done(self, reusable=False, close=True)
        elif state == R_TUNNEL:
            client.abort()
        elif state == R_HEAD and not self.got_bytes:
            client.upstream_closed_early(self)
        else:
            client.upstream_failed(self)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.set_read_pause(1, True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.set_read_pause(1, False)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # exchange ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or client.ex is None:  # bytes on an idle connection: broken framing
            self.close()
            return
        self.got_bytes = True
        state = self.state
        if state != R_HEAD or self.buf:
            client.deadline = self.pool.time() + client.idle_limit
        if state == R_HEAD:
            self._on_head(client, client.ex, data)
        elif state == R_LENGTH:
            self._on_length(client, client.ex, data)
        elif state == R_CHUNKED:
            self._on_chunked(client, client.ex, data)
        elif state in (R_EOF, R_TUNNEL):
            client.write(data)
        else:  # bytes after the response was complete
            self.close()

    def _on_head(self, client: ClientConnection, ex: Exchange, data: bytes) -> None:
        """The response head (maybe with body bytes after it): relay it, pick the framing."""
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        end = data.find(b"\r\n\r\n")
        if end < 0:
            client.deadline = self.pool.time() + client.idle_limit
            if len(data) > _MAX_RESPONSE_HEAD:
                self._broken()
            else:
                self.buf += data
            return
        end += 4
        extra = ex.extra_head
        if extra:  # e.g. Strict-Transport-Security, after the status line
            line_end = data.find(b"\r\n") + 2
            data = data[:line_end] + extra + data[line_end:]
            end += len(extra)
        request = ex.request
        plain = match_plain_response(data, 0, end)
        if plain is not None and request.keep_alive and ex.body_done and request.method != b"HEAD":
            # The common case: an HTTP/1.1 response with a Content-Length and nothing
            # hop-by-hop, whole in this read, relayed as is (the checks below, in short).
            minor, code, length = plain.groups()
            status = int(code)
            if (
                minor == b"1"
                and len(data) - end == int(length)
                and status >= 200
                and status != 204
                and status != 304
            ):
                ex.status = status
                ex.close_after = False
                self.dechunk = False
                self.reusable = True
                ex.sent += len(data)
                if client.transport is not None:
                    client.transport.write(data)
                self.state = R_IDLE
                client.response_done(self, reusable=True, close=False)
                return
        head = parse_response_head(data[:end])
        if head is None:
            self._broken()
            return
        status = head.status
        if status < 200:
            if status == 101:
                if request.upgrade is None:
                    self._broken()
                    return
                ex.status = 101
                self.state = R_TUNNEL
                self.reusable = False
                client.write(rebuild_response_head(head, close=False, upgrade=True))
                client.start_tunnel()
                if end < len(data):
                    client.write(data[end:])
                return
            client.write(data[:end])  # 100 Continue and other interim responses
            if end < len(data):
                self.data_received(data[end:])
            return
        ex.status = status
        no_body = request.method == b"HEAD" or status == 204 or status == 304
        # An answer before the whole request body arrived (a 413, a redirect): the connection
        # closes after it (`response_done`), and the client is told so, not to reuse it.
        client_close = not request.keep_alive or not ex.body_done
        self.dechunk = False
        if no_body:
            state = R_IDLE
        elif head.chunked:
            state = R_CHUNKED
            self.decoder = ChunkedDecoder()
            self.dechunk = request.version == 10
            client_close = client_close or self.dechunk
        elif head.content_length is not None:
            state = R_LENGTH
            self.left = head.content_length
        else:
            state = R_EOF
            client_close = True
        self.reusable = head.keep_alive and state != R_EOF
        ex.close_after = client_close
        rest_len = len(data) - end
        if head.clean and not client_close:
            if state == R_LENGTH and rest_len == self.left:
                # The common case: the whole response in one piece, relayed as is.
                ex.sent += len(data)
                if client.transport is not None:
                    client.transport.write(data)
                self.state = R_IDLE
                client.response_done(self, reusable=self.reusable, close=False)
                return
            client.write(data[:end])
            client.deadline = self.pool.time() + client.idle_limit
        else:
            client.deadline = self.pool.time() + client.idle_limit
            client.write(
                rebuild_response_head(
                    head, close=client_close, dechunk=self.dechunk, version=request.version
                )
            )
        if state == R_IDLE:
            self.state = R_IDLE
            if rest_len:
                self.reusable = False
            client.response_done(self, reusable=self.reusable, close=client_close)
            return
        self.state = state
        if rest_len:
            self.data_received(data[end:])

    def _on_length(self, client: ClientConnection, ex: Exchange, data: bytes) -> None:
        """Body bytes counted against the response's Content-Length."""
        left = self.left
        size = len(data)
        if size < left:
            self.left = left - size
            client.write(data)
            return
        client.write(data if size == left else data[:left])
        self.left = 0
        self.state = R_IDLE
        if size > left:
            self.reusable = False
        client.response_done(self, reusable=self.reusable, close=ex.close_after)

    def _on_chunked(self, client: ClientConnection, ex: Exchange, data: bytes) -> None:
        """Chunked body bytes: framing validated, relayed as is (de-chunked for HTTP/1.0)."""
        decoder = self.decoder
        assert decoder is not None
        try:
            pieces, used = decoder.feed(data)
        except ChunkError:
            self._broken()
            return
        if self.dechunk:
            for piece in pieces:
                client.write(piece)
        else:
            client.write(data if used == len(data) else data[:used])
        if decoder.done:
            self.state = R_IDLE
            if used < len(data):
                self.reusable = False
            client.response_done(self, reusable=self.reusable, close=ex.close_after)

    def _broken(self) -> None:
        """The app sent something that is not HTTP/1.1: drop the connection, 502 if possible."""
        client = self.client
        self.client = None
        self.state = R_IDLE
        self.close()
        if client is not None:
            client.upstream_failed(self)
