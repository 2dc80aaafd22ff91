"""The router's HTTPS listener over real sockets: SNI, bad handshakes, swaps, redirects, HSTS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from phemeral.models import HostPolicy, RoutingSnapshot
from phemeral.router import RouterServer, serve_router

from .certkit import CertAuthority, new_ca, serial_of
from .conftest import BASE, BackendsTestDouble, app_server, raw_request, status_of
from .conftest import snapshot as plain_snapshot

pytestmark = pytest.mark.timeout(60)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(test())  # the loop the router runs on in production


def routes(policies: dict[str, HostPolicy] | None = None) -> RoutingSnapshot:
    from phemeral.models import DeploymentStatus

    base = plain_snapshot({"dep-a": DeploymentStatus.SUCCESSFUL}, {"shop-production": "dep-a"})
    return RoutingSnapshot(
        base_domain=BASE,
        deployments=base.deployments,
        domains=base.domains,
        custom_domains={"shop.example.test": "dep-a"},
        policies=policies or {},
    )


@contextlib.asynccontextmanager
async def tls_router(
    ca: CertAuthority, policies: dict[str, HostPolicy] | None = None
) -> AsyncIterator[RouterServer]:
    async with app_server("control") as cp, app_server("a") as a:
        server = await serve_router(
            host="127.0.0.1",
            port=0,
            https_port=0,
            snapshot=routes(policies),
            backends=BackendsTestDouble({"dep-a": a}),
            control_plane=cp,
            log_sink=None,
            certificates=[ca.issue("shop.example.test"), ca.issue(f"*.{BASE}")],
        )
        try:
            yield server
        finally:
            await server.close()


def client_context(ca: CertAuthority) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    return ctx


class TlsClient:
    """One keep-alive HTTPS connection with a small HTTP/1.1 reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ca: CertAuthority, server_name: str) -> TlsClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(ca), server_hostname=server_name
            ),
            5,
        )
        return cls(reader, writer)

    @property
    def serial(self) -> int:
        sslobj = self.writer.get_extra_info("ssl_object")
        return serial_of(sslobj.getpeercert(binary_form=True))

    async def get(self, host: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


def test_sni_picks_the_certificate_and_requests_reach_the_app() -> None:
    ca = new_ca()

    async def main() -> None:
        async with tls_router(ca) as server:
            port = server.https_port
            assert port is not None
            custom = await TlsClient.open(port, ca, "shop.example.test")
            status, _, body = await custom.get("shop.example.test")
            assert (status, body) == (200, b"hello from a")
            status, _, body = await custom.get("shop.example.test", "/headers")
            headers = dict(json.loads(body)["headers"])
            assert headers["x-forwarded-proto"] == "https"
            custom.close()
            wild = await TlsClient.open(port, ca, f"shop-production.{BASE}")
            assert (await wild.get(f"shop-production.{BASE}"))[2] == b"hello from a"
            assert wild.serial != custom.serial  # the wildcard, not the custom domain's
            # the dashboard through the wildcard too, with the truth in X-Forwarded-Proto
            status, _, body = await wild.get(f"dep-a.{BASE}", "/headers")
            assert dict(json.loads(body)["headers"])["x-forwarded-proto"] == "https"
            wild.close()
            # the plain listener says http, whatever the client claims
            plain = await raw_request(
                server.port,
                b"GET /headers HTTP/1.1\r\nHost: shop.example.test\r\n"
                b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
            )
            body = plain.split(b"\r\n\r\n", 1)[1]
            protos = [v for k, v in json.loads(body)["headers"] if k == "x-forwarded-proto"]
            assert protos == ["http"]

    run(main)


def test_unknown_sni_and_no_sni_without_wildcard_end_the_handshake() -> None:
    ca = new_ca()

    async def main() -> None:
        async with tls_router(ca) as server:
            port = server.https_port
            assert port is not None
            # an alert (the client may see the close before it reads the alert)
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await TlsClient.open(port, ca, "other.example.test")
            # two labels below the base: the one-label wildcard does not cover it
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await TlsClient.open(port, ca, f"x.shop-production.{BASE}")
            server.set_certificates([ca.issue("shop.example.test")])
            ctx = client_context(ca)
            ctx.check_hostname = False
            with pytest.raises(
                (ssl.SSLError, ConnectionResetError)
            ):  # no SNI and no wildcard: nothing to serve
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)

    run(main)


def test_plain_http_and_garbage_on_the_https_port_get_a_prompt_close() -> None:
    ca = new_ca()

    async def main() -> None:
        async with tls_router(ca) as server:
            port = server.https_port
            assert port is not None
            for junk in (
                b"GET / HTTP/1.1\r\nHost: shop.example.test\r\n\r\n",
                b"\x16\x03\x01\x00\x05hello",  # a handshake record holding no ClientHello
                b"\x16\x03\x01\xff\xff" + b"\x00" * 300,  # a record longer than allowed
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(junk)
                with contextlib.suppress(ConnectionResetError):
                    answer = await asyncio.wait_for(reader.read(-1), 5)  # never a hang
                    assert not answer.startswith(b"HTTP/1.1 200")
                writer.close()
            client = await TlsClient.open(port, ca, "shop.example.test")  # still serving
            assert (await client.get("shop.example.test"))[0] == 200
            client.close()

    run(main)


def test_swapping_certificates_keeps_live_connections() -> None:
    ca = new_ca()

    async def main() -> None:
        async with tls_router(ca) as server:
            port = server.https_port
            assert port is not None
            old = await TlsClient.open(port, ca, "shop.example.test")
            assert (await old.get("shop.example.test"))[0] == 200
            renewed = ca.issue("shop.example.test")
            server.set_certificates([renewed, ca.issue(f"*.{BASE}")])
            assert (await old.get("shop.example.test"))[0] == 200  # same connection, still up
            new = await TlsClient.open(port, ca, "shop.example.test")
            assert new.serial != old.serial
            assert new.serial == serial_of(ssl.PEM_cert_to_DER_cert(renewed.chain_pem.decode()))
            assert (await old.get("shop.example.test"))[0] == 200
            old.close()
            new.close()

    run(main)


def test_redirect_hsts_and_acme_answers() -> None:
    ca = new_ca()
    policies = {"shop.example.test": HostPolicy(https_redirect=True, hsts_max_age=600)}

    async def main() -> None:
        async with tls_router(ca, policies) as server:
            port = server.https_port
            answer = await raw_request(
                server.port,
                b"POST /cart?x=1 HTTP/1.1\r\nHost: SHOP.example.test:80\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            assert status_of(answer) == 308
            assert f"location: https://shop.example.test:{port}/cart?x=1\r\n".encode() in answer
            # no policy: plain HTTP is served as before
            answer = await raw_request(
                server.port,
                f"GET / HTTP/1.1\r\nHost: shop-production.{BASE}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert status_of(answer) == 200 and answer.endswith(b"hello from a")
            # HSTS over HTTPS only, on the host whose environment turned it on
            assert port is not None
            client = await TlsClient.open(port, ca, "shop.example.test")
            for path in ("/", "/hop"):  # the relayed head, and the rebuilt one
                _, headers, _ = await client.get("shop.example.test", path)
                assert headers["strict-transport-security"] == "max-age=600", path
            client.close()
            other = await TlsClient.open(port, ca, f"shop-production.{BASE}")
            assert (
                "strict-transport-security" not in (await other.get(f"shop-production.{BASE}"))[1]
            )
            other.close()
            # ACME HTTP-01: a known token for that host is answered over plain HTTP, before
            # any redirect; an unknown one is the app's business
            server.set_challenge("shop.example.test", "tok-1", "tok-1.thumb")
            challenge = (
                b"GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n"
                b"Host: %s\r\nConnection: close\r\n\r\n"
            )
            answer = await raw_request(server.port, challenge % b"shop.example.test")
            assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\ntok-1.thumb")
            answer = await raw_request(server.port, challenge % b"other.example.test")
            assert status_of(answer) == 404
            server.set_challenge("shop.example.test", "tok-1", None)
            answer = await raw_request(server.port, challenge % b"shop.example.test")
            assert status_of(answer) == 308

    run(main)
