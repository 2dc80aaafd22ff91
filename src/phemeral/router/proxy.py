"""The proxy itself: the client side of each exchange, as an asyncio protocol (the thin shell).

Decisions are made by the pure modules (`head`, `chunked`, `table`, `pages`); this module moves
bytes. One request is in flight per client connection at a time: pipelined requests wait in the
connection's buffer until the previous response is complete, which keeps them in order.

Request heads are always re-serialised from the validated `RequestHead`; request bodies are
forwarded by exact ``Content-Length`` count or decoded and re-chunked. The app's side of each
exchange (response framing and relaying) is `phemeral.router.upstream.UpstreamConnection`; a
hello-world response is one ``write`` each way. The state all connections share (`Router`) and
the timeouts (`RouterLimits`) live in `phemeral.router.state`, re-exported here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import cast

from phemeral.errors import BootFailed, RuntimeFailure
from phemeral.models import DeploymentStatus
from phemeral.router.backends import WakeBusy, WakeTimeout
from phemeral.router.chunked import LAST_CHUNK, ChunkedDecoder, ChunkError, encode_chunk
from phemeral.router.exchange import Exchange
from phemeral.router.head import (
    MAX_HEAD_BYTES,
    Reject,
    RequestHead,
    find_head_end,
    parse_request_head,
)
from phemeral.router.host import normalise_host
from phemeral.router.pages import named_page, plain_text, redirect_page, reject_page
from phemeral.router.state import Router as Router
from phemeral.router.state import RouterLimits as RouterLimits
from phemeral.router.table import NO_HOST, DeploymentTarget, PlatformRoute
from phemeral.router.tls import ACME_CHALLENGE_PREFIX
from phemeral.router.upstream import R_HEAD, UpstreamConnection

log = logging.getLogger(__name__)

CONTROL_KEY = "\x00control-plane"
_PROTO = {False: b"x-forwarded-proto: http\r\n", True: b"x-forwarded-proto: https\r\n"}
BUFFER_LIMIT = 1024 * 1024  # early request body / pipelined bytes held before pausing reads

# Deadline kinds (checked by the router's sweeper once per second).
_NONE, _HEAD, _KEEPALIVE, _FIRST_BYTE, _IDLE, _LINGER = range(6)


class ClientConnection(asyncio.Protocol):
    """One client connection: reads request heads, routes them, relays each exchange.

    What lasts as long as the connection lives here (buffer, deadline, flow control); what
    belongs to one request lives in its `Exchange` (``self.ex``, None between requests).
    """

    def __init__(self, router: Router, *, tls: bool = False) -> None:
        self.router = router
        self.tls = tls  # the connection came in over the HTTPS listener
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.closing = False  # an answer that ends the connection was written
        self.linger_until = 0.0  # lingering close: the rest of the client's bytes dropped until
        self.deadline = 0.0
        self.deadline_kind = _NONE
        self.idle_limit = router.limits.idle_timeout
        self.forwarded = b""
        self.read_paused = 0
        self.writing_paused = False
        self.ex: Exchange | None = None

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else "unknown"
        self.forwarded = b"x-forwarded-for: " + str(address).encode() + b"\r\n" + _PROTO[self.tls]
        self.router.connections.add(self)
        self._set_deadline(_KEEPALIVE, self.router.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.connections.discard(self)
        ex = self.ex
        if ex is None:
            return
        if ex.connecting is not None:
            ex.connecting.cancel()
            ex.connecting = None
        upstream = ex.upstream
        if upstream is not None:
            # The client left: cancel the app's request by closing its connection.
            ex.upstream = None
            upstream.client = None
            upstream.close()
        self._finish(ex.status or 499)

    def pause_writing(self) -> None:
        self.writing_paused = True
        upstream = self.ex.upstream if self.ex is not None else None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        upstream = self.ex.upstream if self.ex is not None else None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            if self.deadline_kind == _LINGER:  # dropped; the client is still sending
                limits = self.router.limits
                self.deadline = min(
                    self.router.loop.time() + limits.linger_timeout, self.linger_until
                )
            return
        ex = self.ex
        if ex is not None:
            if ex.tunnel:
                upstream = ex.upstream
                if upstream is not None and upstream.transport is not None:
                    upstream.transport.write(data)
                    self.deadline = self.router.loop.time() + self.idle_limit
                return
            if not ex.body_done:
                self._feed_body(ex, data)
                return
            self.buf += data
            if len(self.buf) > BUFFER_LIMIT:
                self.set_read_pause(2, True)
            return
        buf = self.buf
        if not buf:
            end = data.find(b"\r\n\r\n")
            if end >= 0 and end + 4 == len(data) and data[0] != 0x0D:
                self._on_head(data)
                return
            self._set_deadline(_HEAD, self.router.limits.header_timeout)
        buf += data
        self._process()

    # request side ------------------------------------------------------------------------

    def _process(self) -> None:
        """Start the requests held in the buffer, in order, while each is answered at once
        (our own pages); stop at the first one that goes to an app, or an incomplete head."""
        buf = self.buf
        while self.ex is None and not self.closing:
            while buf[:2] == b"\r\n":  # empty lines before a request line are allowed
                del buf[:2]
            if not buf:
                return
            end = find_head_end(buf)
            if end == -1:
                if len(buf) > MAX_HEAD_BYTES:
                    self._reject(431, "request head too large")
                return
            if end == -2:
                self._reject(400, "bare LF in request head")
                return
            head = bytes(buf[:end])
            del buf[:end]
            self._on_head(head)

    def _on_head(self, raw: bytes) -> None:
        parsed = parse_request_head(raw)
        if isinstance(parsed, Reject):
            self._reject(parsed.status, parsed.reason)
            return
        router = self.router
        if router.draining and parsed.keep_alive:  # answered here, then the client moves on
            parsed = dataclasses.replace(parsed, keep_alive=False)
        host = parsed.host
        if (
            not self.tls
            and router.challenges
            and host is not None
            and parsed.target.startswith(ACME_CHALLENGE_PREFIX)
            and self._challenge(parsed, host)
        ):
            return
        route = NO_HOST if host is None else router.table.resolve_raw(host)
        if route is None:
            self._reject(400, "invalid Host header")
            return
        extra_head = b""
        if type(route) is DeploymentTarget:
            if self.tls:
                extra_head = route.hsts
            elif route.https_redirect and router.https_port is not None:
                assert host is not None
                self._redirect(parsed, host, router.https_port)
                return
            status = route.status
            if status is not DeploymentStatus.SUCCESSFUL:
                self._local(parsed, "building" if status is DeploymentStatus.BUILDING else "failed")
                return
            deployment_id: str | None = route.deployment_id
            key = route.deployment_id
        elif type(route) is PlatformRoute:
            deployment_id = None
            key = CONTROL_KEY
        else:
            self._local(parsed, route.reason)  # type: ignore[union-attr]
            return
        assert host is not None
        ex = self.ex = Exchange(
            parsed, key, deployment_id, started=router.loop.time(), extra_head=extra_head
        )
        if parsed.chunked:
            framing = b"transfer-encoding: chunked\r\n"
            ex.decoder = ChunkedDecoder()
            ex.body_done = False
        elif parsed.content_length is not None:
            framing = b"content-length: %d\r\n" % parsed.content_length
            ex.body_left = parsed.content_length
            ex.body_done = parsed.content_length == 0
        else:
            framing = b""
        if parsed.upgrade is not None:
            framing += b"connection: upgrade\r\nupgrade: websocket\r\n"
        ex.upstream_head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%s%sx-forwarded-host: %s\r\n%s\r\n" % (
            parsed.method,
            parsed.target,
            host,
            parsed.forward_headers,
            self.forwarded,
            host,
            framing,
        )
        if deployment_id is not None:
            router.backends.request_started(deployment_id)
        conn = router.pool.take(key)
        if conn is not None:
            self._attach(ex, conn, reused=True)
        else:
            self.deadline = 0.0
            ex.connecting = router.loop.create_task(self._connect(ex))
        if not ex.body_done and self.buf:
            rest = bytes(self.buf)
            self.buf.clear()
            self._feed_body(ex, rest)

    def _feed_body(self, ex: Exchange, data: bytes) -> None:
        decoder = ex.decoder
        if decoder is None:
            left = ex.body_left
            size = len(data)
            if size <= left:
                self._send_body(ex, data)
                ex.body_left = left - size
                if size == left:
                    ex.body_done = True
                return
            self._send_body(ex, data[:left])
            ex.body_left = 0
            ex.body_done = True
            self.buf += data[left:]
        else:
            try:
                pieces, used = decoder.feed(data)
            except ChunkError as exc:
                ex.close_after = True
                if ex.status == 0:
                    self._fail_with(reject_page(400, exc.message), 400)
                else:
                    self.abort()
                return
            for piece in pieces:
                if piece:
                    self._send_body(ex, encode_chunk(piece))
            if decoder.done:
                self._send_body(ex, LAST_CHUNK)
                ex.body_done = True
                ex.decoder = None
                if used < len(data):
                    self.buf += data[used:]
        if ex.body_done and len(self.buf) > BUFFER_LIMIT:
            self.set_read_pause(2, True)

    def _send_body(self, ex: Exchange, piece: bytes) -> None:
        upstream = ex.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(piece)
            if ex.status == 0:
                self._set_deadline(_FIRST_BYTE, self.router.limits.first_byte_timeout)
        else:
            ex.early.append(piece)
            ex.early_size += len(piece)
            if ex.early_size > BUFFER_LIMIT:
                self.set_read_pause(2, True)

    async def _connect(self, ex: Exchange) -> None:
        router = self.router
        deployment_id = ex.deployment_id
        try:
            if deployment_id is None:
                upstream = router.control_plane
            else:
                started = router.loop.time()
                upstream = await router.gate.upstream_for(deployment_id)
                waited = (router.loop.time() - started) * 1000
                if waited >= 1.0:
                    ex.wake_ms = waited
            conn = await asyncio.wait_for(
                router.pool.connect(ex.key, upstream, UpstreamConnection),
                router.limits.connect_timeout,
            )
        except WakeBusy:
            self._fail("waking-busy")
        except WakeTimeout:
            self._fail("waking-timeout")
        except BootFailed as exc:
            log.warning("deployment %s failed to start: %s", deployment_id, exc)
            self._fail("unavailable")
        except RuntimeFailure:
            self._fail("unavailable")
        except TimeoutError:
            self._fail("connect-timeout")
        except OSError:
            self._fail("connect-failed")
        except Exception:
            log.exception("could not reach the upstream of %s", deployment_id or "control plane")
            self._fail("connect-failed")
        else:
            if self.closed or self.ex is not ex:
                conn.close()
            else:
                self._attach(ex, conn, reused=False)
        finally:
            ex.connecting = None

    def _attach(self, ex: Exchange, conn: UpstreamConnection, *, reused: bool) -> None:
        ex.upstream = conn
        conn.client = self
        conn.reused = reused
        conn.state = R_HEAD
        conn.got_bytes = False
        if conn.buf:
            conn.buf.clear()
        transport = conn.transport
        assert transport is not None
        if self.writing_paused:
            transport.pause_reading()
        transport.write(ex.upstream_head)
        if ex.early:
            transport.writelines(ex.early)
            ex.early = []
            ex.early_size = 0
            self.set_read_pause(2, False)
        self.deadline_kind = _FIRST_BYTE
        self.deadline = self.router.loop.time() + self.router.limits.first_byte_timeout

    # response side -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        ex = self.ex
        if ex is not None:
            ex.sent += len(data)
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def start_tunnel(self) -> None:
        ex = self.ex
        assert ex is not None
        ex.tunnel = True
        self.idle_limit = self.router.limits.tunnel_idle_timeout
        self._set_deadline(_IDLE, self.idle_limit)
        upstream = ex.upstream
        if self.buf and upstream is not None and upstream.transport is not None:
            upstream.transport.write(bytes(self.buf))
            self.buf.clear()

    def response_done(self, upstream: UpstreamConnection, *, reusable: bool, close: bool) -> None:
        """The app's response is complete; recycle its connection and take the next request."""
        router = self.router
        ex = self.ex
        assert ex is not None
        ex.upstream = None
        upstream.client = None
        if self.writing_paused and upstream.transport is not None:
            upstream.transport.resume_reading()
        if reusable and ex.body_done and not upstream.closed:
            router.pool.put(ex.key, upstream)
        else:
            upstream.close()
        self._finish(ex.status)
        if not ex.body_done:
            self._close(linger=True)  # answered before the client sent its whole body
            return
        if close or ex.close_after or self.closed:
            self._close()
            return
        self.deadline_kind = _KEEPALIVE
        self.deadline = router.loop.time() + router.limits.keepalive_timeout
        if self.read_paused:
            self.set_read_pause(3, False)
        if self.buf:
            self._process()

    def upstream_closed_early(self, upstream: UpstreamConnection) -> None:
        """A reused connection closed before answering: retry once on a fresh one if safe."""
        ex = self.ex
        if (
            ex is not None
            and upstream.reused
            and not ex.retried
            and not ex.request.has_body
            and ex.request.upgrade is None
        ):
            ex.retried = True
            ex.upstream = None
            self.deadline = 0.0
            ex.connecting = self.router.loop.create_task(self._connect(ex))
            return
        self.upstream_failed(upstream)

    def upstream_failed(self, upstream: UpstreamConnection) -> None:
        ex = self.ex
        if ex is not None:
            ex.upstream = None
            if ex.status == 0 and ex.sent == 0:
                self._fail("upstream-error")
                return
        self.abort()

    def _finish(self, status: int) -> None:
        """Account for the end of an exchange (in-flight count, access log) and drop it."""
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        if ex.tunnel:
            self.idle_limit = self.router.limits.idle_timeout
        deployment_id = ex.deployment_id
        if deployment_id is None:
            return
        router = self.router
        router.backends.request_finished(deployment_id)
        request = ex.request
        router.access_log.add(
            deployment_id,
            request.method,
            request.target,
            status,
            ex.sent,
            (router.loop.time() - ex.started) * 1000,
            ex.wake_ms,
        )

    # local answers and errors ------------------------------------------------------------

    def _local(self, request: RequestHead, name: str) -> None:
        """Answer with one of our pages; keep the connection only when no body must be skipped."""
        close = not request.keep_alive or request.has_body
        _, page = named_page(name, close=close)
        self.write(page)
        if close:
            self._close(linger=request.has_body)
        else:
            self._set_deadline(_KEEPALIVE, self.router.limits.keepalive_timeout)

    def _challenge(self, request: RequestHead, raw_host: bytes) -> bool:
        """Answer an ACME HTTP-01 request whose token we know; False: not ours, route it."""
        host = normalise_host(raw_host)
        answer = None if host is None else self.router.challenges.answer(host, request.target)
        if answer is None:
            return False
        close = not request.keep_alive or request.has_body
        self.write(plain_text(answer, close=close))
        if close:
            self._close(linger=request.has_body)
        else:
            self._set_deadline(_KEEPALIVE, self.router.limits.keepalive_timeout)
        return True

    def _redirect(self, request: RequestHead, raw_host: bytes, https_port: int) -> None:
        """308 to the same target over HTTPS (the host has a valid certificate)."""
        host = normalise_host(raw_host)
        if host is None:
            self._reject(400, "invalid Host header")
            return
        port = b"" if https_port == 443 else b":%d" % https_port
        location = b"https://" + host.encode() + port + request.target
        close = not request.keep_alive or request.has_body
        self.write(redirect_page(location, close=close))
        if close:
            self._close(linger=request.has_body)
        else:
            self._set_deadline(_KEEPALIVE, self.router.limits.keepalive_timeout)

    def _reject(self, status: int, reason: str) -> None:
        self.write(reject_page(status, reason))
        self._close(linger=True)  # what follows a head we refused is dropped, not reset

    def _fail(self, name: str) -> None:
        status, page = named_page(name, close=True)
        self._fail_with(page, status)

    def _fail_with(self, page: bytes, status: int) -> None:
        ex = self.ex
        if ex is not None:
            self._drop_upstream(ex)
            ex.status = status
        if self.closed:
            return
        self.write(page)
        self._finish(status)
        self._close(linger=ex is not None and not ex.body_done)

    def abort(self) -> None:
        """Cut the client connection mid-response (the app failed after sending bytes)."""
        ex = self.ex
        status = 0
        if ex is not None:
            self._drop_upstream(ex)
            status = ex.status
        self._finish(status or 502)
        if self.transport is not None:
            self.transport.abort() if status == 0 else self.transport.close()

    @staticmethod
    def _drop_upstream(ex: Exchange) -> None:
        upstream = ex.upstream
        if upstream is not None:
            ex.upstream = None
            upstream.client = None
            upstream.close()

    def _close(self, *, linger: bool = False) -> None:
        """End the connection once what was written is sent. ``linger``: the client may still be
        sending (a body we did not read, bytes after a refused head): stop sending (FIN), but
        read and drop what it sends until it closes, or `RouterLimits.linger_timeout` passes
        without a byte, or `RouterLimits.linger_time` in all, as nginx's lingering close does.
        Closing at once would answer its next bytes with a reset, which can destroy our
        answer before the client has read it."""
        self.deadline = 0.0
        self.closing = True
        transport = self.transport
        if transport is None or self.closed:
            return
        if not linger or not transport.can_write_eof():  # TLS: no half close
            transport.close()
            return
        limits = self.router.limits
        now = self.router.loop.time()
        self.linger_until = now + limits.linger_time
        transport.write_eof()
        self._set_deadline(_LINGER, min(limits.linger_timeout, limits.linger_time))
        self.read_paused = 0
        transport.resume_reading()

    # flow control and deadlines ----------------------------------------------------------

    def set_read_pause(self, reason: int, on: bool) -> None:
        before = self.read_paused
        after = before | reason if on else before & ~reason
        self.read_paused = after
        transport = self.transport
        if transport is None or self.closed or bool(before) == bool(after):
            return
        if after:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _set_deadline(self, kind: int, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self.router.loop.time() + seconds

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        if kind == _LINGER:
            if self.transport is not None:
                self.transport.close()
            return
        ex = self.ex
        if ex is None:
            if kind == _HEAD and self.buf:
                self._reject(408, "request head not received in time")
            else:
                self._close()
        elif ex.status == 0 and ex.upstream is not None:
            self._fail("first-byte-timeout")
        else:
            self.abort()
