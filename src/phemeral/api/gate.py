"""The gate in front of the API: who is asking and how much they send, before any body is read.

An ASGI middleware around the whole FastAPI app (API and dashboard), in this order:

1. the client address: the peer's, or, when the API sits behind our own router (the private
   Unix socket, ``trust_forwarded``), the ``X-Forwarded-For`` the router set (it drops any the
   client sent);
2. for every ``/api`` path but the public ones (health, the OpenAPI document and the signed
   GitHub webhook): an address with too many recent failures gets 429 + ``Retry-After``; then the
   bearer token is checked, from the headers alone; a missing or wrong token is 401. Neither
   hands a byte of the body to the app (the server discards what still arrives). The
   webhook's own 401s (bad signatures) count as failures of the address too, and a blocked
   address gets 429 there before its body is read;
3. the body cap of the endpoint: a declared ``Content-Length`` over it is 413 at once; a body
   that grows past it while streaming (chunked, or lying) is cut off and answered 413.

Every refusal has the API's JSON error shape. The pure parts (`client_address`, `needs_token`,
`body_limit`) take everything as arguments.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from phemeral.api.auth import TokenChecker
from phemeral.api.errors import RETRY_AFTER_SECONDS
from phemeral.api.ratelimit import AuthFailures
from phemeral.api.services import MAX_RESTORE_BYTES
from phemeral.errors import PhemeralError, TooManyFailures, Unauthorized
from phemeral.github.events import MAX_BODY_BYTES as WEBHOOK_BODY_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_API = frozenset(
    {"/api/health", "/api/openapi.json", "/api/docs", "/api/docs/oauth2-redirect"}
)
WEBHOOK_PATH = "/api/webhooks/github"
UPLOAD_PATH = re.compile(r"^/api/projects/[^/]+/deployments/?$")
RESTORE_PATH = re.compile(r"^/api/services/[^/]+/restore/?$")
FRAMING = 64 << 10  # multipart boundaries and the few form fields beside a file
UNKNOWN_ADDRESS = "unknown"


@dataclass(frozen=True)
class BodyLimits:
    """Bytes a request body may have: source uploads, service backups to restore, webhook
    deliveries, everything else."""

    upload: int
    restore: int = MAX_RESTORE_BYTES + FRAMING
    webhook: int = WEBHOOK_BODY_BYTES
    other: int = 1 << 20

    @classmethod
    def for_uploads_of(cls, max_upload_mb: int) -> BodyLimits:
        return cls(upload=max_upload_mb * 1024 * 1024 + FRAMING)


def client_address(scope: Scope, *, trust_forwarded: bool) -> str:
    """Who is asking: the router's ``X-Forwarded-For`` behind our router, else the peer."""
    if trust_forwarded:
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                last = value.decode("latin-1").rsplit(",", 1)[-1].strip()
                return last or UNKNOWN_ADDRESS
    client = scope.get("client")
    if client and client[0]:
        return str(client[0])
    return UNKNOWN_ADDRESS


def needs_token(path: str) -> bool:
    """Every API path but the public ones and the signed webhook (the dashboard has its own
    session check)."""
    if path != "/api" and not path.startswith("/api/"):
        return False
    return path not in PUBLIC_API and path.rstrip("/") != WEBHOOK_PATH


def body_limit(method: str, path: str, limits: BodyLimits) -> int:
    if method == "POST" and UPLOAD_PATH.match(path):
        return limits.upload
    if method == "POST" and RESTORE_PATH.match(path):
        return limits.restore
    if path.rstrip("/") == WEBHOOK_PATH:
        return limits.webhook
    return limits.other


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def refuse(
    send: Send, status: int, code: str, message: str, *, retry_after: int | None = None
) -> None:
    """The JSON error shape. No ``Connection: close``: closing a socket with unread data makes
    the kernel send a reset, which can destroy the answer before the peer (our router) reads it;
    the server discards the rest of the body instead (never handed to the app, no memory)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after is None and status == 503:
        retry_after = RETRY_AFTER_SECONDS  # the store cannot answer: as every 503 of the API
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenChecker,
        limits: BodyLimits,
        failures: AuthFailures | None = None,
        trust_forwarded: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.limits = limits
        self.failures = failures or AuthFailures()
        self.trust_forwarded = trust_forwarded
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if needs_token(path):
            refused = await self._authenticate(scope)
            if refused is not None:
                wait = refused.retry_after if isinstance(refused, TooManyFailures) else None
                await refuse(
                    send, refused.http_status, refused.code, refused.message, retry_after=wait
                )
                return
        signed = path.rstrip("/") == WEBHOOK_PATH
        if signed:  # a bad signature costs an HMAC per project: failures count there too
            wait = self.failures.retry_after(self._address(scope), self.clock())
            if wait is not None:
                error = _too_many(wait)
                await refuse(send, error.http_status, error.code, error.message, retry_after=wait)
                return
        limit = body_limit(str(scope.get("method", "GET")), path, self.limits)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await refuse(send, 413, "payload_too_large", _too_large(limit))
            return
        await self._limited(scope, receive, send, limit, count_401=signed)

    def _address(self, scope: Scope) -> str:
        return client_address(scope, trust_forwarded=self.trust_forwarded)

    async def _authenticate(self, scope: Scope) -> PhemeralError | None:
        address = client_address(scope, trust_forwarded=self.trust_forwarded)
        wait = self.failures.retry_after(address, self.clock())
        if wait is not None:
            return _too_many(wait)
        header = _header(scope, b"authorization")
        try:
            if self.tokens.known(header) is None:
                await asyncio.to_thread(self.tokens.actor, header)  # may reload (a query)
        except Unauthorized as exc:
            wait = self.failures.failed(address, self.clock())
            return exc if wait is None else _too_many(wait)
        except PhemeralError as exc:  # the store cannot answer
            return exc
        return None

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, limit: int, *, count_401: bool = False
    ) -> None:
        received = 0
        too_large = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True  # the app sees a client that went away
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:  # whatever the app answers to the cut-off body, the client gets 413
                if not started:
                    started = True
                    await refuse(send, 413, "payload_too_large", _too_large(limit))
                return
            if message["type"] == "http.response.start":
                started = True
                if count_401 and message.get("status") == 401:
                    self.failures.failed(self._address(scope), self.clock())
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if too_large and not started:
            await refuse(send, 413, "payload_too_large", _too_large(limit))


def _too_large(limit: int) -> str:
    return f"the request body is larger than this endpoint's limit of {limit} bytes"


def _too_many(wait: int) -> TooManyFailures:
    return TooManyFailures(wait)
