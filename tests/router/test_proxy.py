"""The router over real sockets, in front of real uvicorn apps."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets

from phemeral.errors import Unavailable
from phemeral.models import DeploymentStatus
from phemeral.router import RouterLimits

from .conftest import (
    BackendsTestDouble,
    LogSinkTestDouble,
    app_server,
    raw_request,
    router,
    snapshot,
    status_of,
)

pytestmark = pytest.mark.timeout(60)

OK = DeploymentStatus.SUCCESSFUL


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def url(port: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{port}{path}"


def host(label: str) -> dict[str, str]:
    return {"Host": f"{label}.phemeral.localhost:8000"}


def test_routes_every_kind_of_domain() -> None:
    async def main() -> None:
        async with app_server("control") as cp, app_server("a") as a, app_server("b") as b:
            backends = BackendsTestDouble({"dep-a": a, "dep-b": b})
            routes = snapshot(
                {
                    "dep-a": OK,
                    "dep-b": OK,
                    "dep-c": DeploymentStatus.BUILDING,
                    "dep-d": DeploymentStatus.FAILED,
                },
                {"shop-production": "dep-b", "shop-staging": None},
            )
            async with router(routes, backends, cp) as server, httpx.AsyncClient() as client:
                port = server.port

                async def get(hostname: str) -> httpx.Response:
                    return await client.get(url(port), headers={"Host": hostname})

                for name in (
                    "phemeral.localhost",
                    "PHEMERAL.LOCALHOST.:8000",
                    "localhost",
                    "127.0.0.1",
                    "[::1]:8000",
                ):
                    response = await get(name)
                    assert response.text == "hello from control", name
                assert (await get("dep-a.phemeral.localhost")).text == "hello from a"
                assert (await get("dep-b.phemeral.localhost:8000")).text == "hello from b"
                assert (await get("shop-production.phemeral.localhost")).text == "hello from b"
                building = await get("dep-c.phemeral.localhost")
                assert building.status_code == 503 and building.headers["retry-after"] == "5"
                assert "still building" in building.text
                failed = await get("dep-d.phemeral.localhost")
                assert failed.status_code == 502 and "failed to build" in failed.text
                assert (await get("shop-staging.phemeral.localhost")).status_code == 404
                for unknown in (
                    "gone.phemeral.localhost",
                    "evilphemeral.localhost",
                    "x.dep-a.phemeral.localhost",
                    "example.com",
                ):
                    response = await get(unknown)
                    assert response.status_code == 404, unknown
                    assert "no app at this address" in response.text
                    assert unknown.split(".")[0] not in response.text  # nothing echoed back
            assert backends.in_flight == {"dep-a": 0, "dep-b": 0}

    run(main)


def test_forwarded_headers_are_ours_and_hop_by_hop_are_dropped() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            request = (
                b"GET /headers HTTP/1.1\r\nHost: dep-a.phemeral.localhost:8000\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
                b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
                b"Connection: close, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n"
            )
            response = await raw_request(server.port, request)
        headers = json.loads(response.split(b"\r\n\r\n", 1)[1])["headers"]
        names = [name for name, _ in headers]
        assert dict(headers)["x-forwarded-for"] == "127.0.0.1"
        assert dict(headers)["x-forwarded-proto"] == "http"
        assert dict(headers)["x-forwarded-host"] == "dep-a.phemeral.localhost:8000"
        assert dict(headers)["x-keep"] == "2"
        for dropped in ("forwarded", "x-real-ip", "x-drop", "connection"):
            assert dropped not in names
        assert names.count("x-forwarded-for") == 1 and names.count("host") == 1

    run(main)


def test_hop_by_hop_response_fields_are_dropped() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            async with router(snapshot({"dep-a": OK}), backends, cp) as server:
                raw = b"GET /hop HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(raw)
                first = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
                writer.write(raw.replace(b"/hop", b"/"))  # the client connection is still usable
                second = await asyncio.wait_for(reader.readuntil(b"hello from a"), 5)
                writer.close()
        assert b"keep-alive" not in first.lower() and b"x-end: kept" in first
        assert second.startswith(b"HTTP/1.1 200 OK")

    run(main)


def test_route_switch_under_load_fails_no_request() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a, app_server("b") as b:
            backends = BackendsTestDouble({"dep-a": a, "dep-b": b})
            before = snapshot({"dep-a": OK, "dep-b": OK}, {"shop-production": "dep-a"})
            after = snapshot({"dep-a": OK, "dep-b": OK}, {"shop-production": "dep-b"})
            async with router(before, backends, cp) as server:
                port = server.port
                # (sent, answered, app): the switch is synchronous on the router's loop,
                # so a request sent after it must be routed by the new table, and one
                # answered before it was routed by the old one
                seen: list[tuple[float, float, str]] = []
                switched_at = 0.0

                async def worker() -> None:
                    async with httpx.AsyncClient() as client:
                        for _ in range(40):
                            sent = time.monotonic()
                            response = await client.get(
                                url(port, "/whoami"), headers=host("shop-production")
                            )
                            assert response.status_code == 200
                            seen.append((sent, time.monotonic(), response.json()["app"]))

                async def slow_in_flight() -> str:
                    async with httpx.AsyncClient() as client:
                        response = await client.get(
                            url(port, "/slow?q=1"), headers=host("shop-production")
                        )
                        return response.text

                slow = asyncio.create_task(slow_in_flight())
                workers = [asyncio.create_task(worker()) for _ in range(8)]
                while len(seen) < 40:  # traffic is flowing, and the slow request is in flight
                    await asyncio.sleep(0.01)
                assert not slow.done()
                server.update(after)
                switched_at = time.monotonic()
                await asyncio.gather(*workers)
                assert await slow == "late"  # the in-flight request finished on dep-a
        assert len(seen) == 320
        assert {app for sent, _, app in seen if sent > switched_at} == {"b"}
        assert {app for _, answered, app in seen if answered < switched_at} == {"a"}

    run(main)


def test_an_answer_before_the_whole_request_body_says_the_connection_closes() -> None:
    """An app that answers without reading the body (a 413, a redirect): the router closes the
    client connection after the answer, and says so (``Connection: close``), so that the client
    does not send its next request into a closed connection."""

    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            routes = snapshot({"dep-a": OK}, {})
            async with router(routes, backends, cp) as server:
                head = (
                    b"POST / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n"
                    b"Content-Length: 1000000\r\n\r\n"
                )
                response = await raw_request(server.port, head + b"x" * 1000)
                assert status_of(response) == 200
                head_text = response.split(b"\r\n\r\n", 1)[0].lower()
                assert b"\r\nconnection: close" in head_text, response
                assert response.endswith(b"hello from a")
                # a whole body: the same answer keeps the connection
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    writer.write(
                        b"POST / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n"
                        b"Content-Length: 2\r\n\r\nhi"
                    )
                    answer = await asyncio.wait_for(reader.readuntil(b"hello from a"), 5)
                    assert b"connection: close" not in answer.lower()
                finally:
                    writer.close()

    run(main)


def test_a_client_still_sending_its_body_reads_the_early_answer_not_a_reset() -> None:
    """Lingering close: after an answer given before the whole body arrived, the router stops
    sending but reads and drops what the client still sends. A client that writes its whole
    upload before it reads reads the answer and a clean end, not a reset that would have
    destroyed the answer (what closing at once does, as soon as more body arrives)."""

    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            async with router(snapshot({"dep-a": OK}, {}), backends, cp) as server:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    writer.write(
                        b"POST / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n"
                        b"Content-Length: 4000000\r\n\r\n" + b"x" * 1000
                    )
                    await writer.drain()
                    await asyncio.sleep(0.5)  # answered (without reading the body) meanwhile
                    for _ in range(16):  # the rest of the upload, before reading anything
                        writer.write(b"y" * 65536)
                        await writer.drain()
                        await asyncio.sleep(0.02)
                    answer = await asyncio.wait_for(reader.read(), 10)  # to the end
                finally:
                    writer.close()
                assert status_of(answer) == 200, answer
                assert answer.endswith(b"hello from a")

    run(main)


def test_a_lingering_connection_ends_when_the_client_goes_quiet_or_sends_too_long() -> None:
    """The lingering close is bounded: a client that stops sending without closing is closed
    after ``linger_timeout``; one that keeps sending, after ``linger_time`` in all."""
    limits = RouterLimits(linger_timeout=1.0, linger_time=3.0)
    head = b"POST / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\nContent-Length: 90000000\r\n\r\n"

    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            async with router(snapshot({"dep-a": OK}, {}), backends, cp, limits) as server:
                quiet = await asyncio.open_connection("127.0.0.1", server.port)
                quiet[1].write(head + b"x" * 100)
                assert status_of(await asyncio.wait_for(quiet[0].read(), 5)) == 200
                started = time.monotonic()
                while server.router.connections:  # the router's side is gone too
                    assert time.monotonic() - started < 4, "a quiet lingering client was kept"
                    await asyncio.sleep(0.05)
                quiet[1].close()

                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(head)
                started = time.monotonic()
                with pytest.raises(OSError):  # reset once the router closed: past linger_time
                    while time.monotonic() - started < 10:
                        writer.write(b"y" * 1024)
                        await writer.drain()
                        await asyncio.sleep(0.1)
                assert 2.5 < time.monotonic() - started < 7
                writer.close()

    run(main)


def test_keep_alive_reuses_one_upstream_connection() -> None:
    """Regression: responses must leave the upstream connection reusable (keep-alive read at the
    end of each message), so sequential requests, even from new clients, share one connection."""

    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            ports = set()
            async with httpx.AsyncClient() as client:
                for _ in range(10):
                    response = await client.get(url(server.port, "/whoami"), headers=host("dep-a"))
                    ports.add(response.json()["port"])
            for _ in range(5):
                async with httpx.AsyncClient() as client:
                    response = await client.get(url(server.port, "/whoami"), headers=host("dep-a"))
                    ports.add(response.json()["port"])
            # HEAD and chunked responses keep it reusable too.
            async with httpx.AsyncClient() as client:
                assert (
                    await client.head(url(server.port, "/big?n=10"), headers=host("dep-a"))
                ).headers["content-length"] == "10"
                assert (
                    await client.get(url(server.port, "/stream?n=2"), headers=host("dep-a"))
                ).text == "data: 0\n\ndata: 1\n\n"
                response = await client.get(url(server.port, "/whoami"), headers=host("dep-a"))
                ports.add(response.json()["port"])
            assert len(ports) == 1
            assert server.router.pool.opened == 1

    run(main)


def test_upstream_connections_are_never_shared_across_deployments() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            # Two deployments that happen to share an address still get their own connections.
            backends = BackendsTestDouble({"dep-a": a, "dep-b": a})
            routes = snapshot({"dep-a": OK, "dep-b": OK})
            async with router(routes, backends, cp) as server, httpx.AsyncClient() as client:
                ports: dict[str, set[int]] = {"dep-a": set(), "dep-b": set()}
                for _ in range(4):
                    for dep in ports:
                        response = await client.get(url(server.port, "/whoami"), headers=host(dep))
                        ports[dep].add(response.json()["port"])
                assert len(ports["dep-a"]) == len(ports["dep-b"]) == 1
                assert ports["dep-a"] != ports["dep-b"]
                assert server.router.pool.opened == 2

    run(main)


def test_control_plane_over_a_unix_socket(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            app_server("control", unix_path=str(tmp_path / "api.sock")) as cp,
            router(snapshot(), BackendsTestDouble({}), cp) as server,
        ):
            response = await raw_request(
                server.port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
        assert status_of(response) == 200 and response.endswith(b"hello from control")

    run(main)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            one = b"GET /slow?q=0.2 HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
            two = b"HEAD /big?n=7 HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
            three = b"GET / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\nConnection: close\r\n\r\n"
            response = await raw_request(server.port, one + two + three)
        parts = response.split(b"HTTP/1.1 200 OK")
        assert len(parts) == 4
        assert parts[1].endswith(b"late")
        assert b"content-length: 7" in parts[2] and parts[2].endswith(b"\r\n\r\n")
        assert parts[3].endswith(b"hello from a")

    run(main)


def test_a_long_pipeline_of_local_answers_is_served_in_a_loop() -> None:
    async def main() -> None:
        one = b"GET / HTTP/1.1\r\nHost: nope.phemeral.localhost\r\n\r\n"
        last = b"GET / HTTP/1.1\r\nHost: nope.phemeral.localhost\r\nConnection: close\r\n\r\n"
        async with app_server("cp") as cp, router(snapshot(), BackendsTestDouble({}), cp) as server:
            response = await raw_request(server.port, one * 5000 + last)
        assert response.count(b"HTTP/1.1 404 Not Found") == 5001

    run(main)


def test_streaming_sse_arrives_event_by_event() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
            httpx.AsyncClient() as client,
        ):
            arrivals = []
            async with client.stream(
                "GET", url(server.port, "/stream?n=6"), headers=host("dep-a")
            ) as response:
                assert response.headers["content-type"] == "text/event-stream"
                async for line in response.aiter_lines():
                    if line:
                        arrivals.append((time.monotonic(), line))
        assert [line for _, line in arrivals] == [f"data: {i}" for i in range(6)]
        # The app sleeps 50 ms between events: they must not arrive in one burst at the end.
        assert arrivals[-1][0] - arrivals[0][0] > 0.15

    run(main)


def test_large_bodies_both_ways_and_chunked_uploads() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
            httpx.AsyncClient(timeout=30) as client,
        ):
            payload = bytes(range(256)) * 40_000  # ~10 MB
            response = await client.post(
                url(server.port, "/echo"), headers=host("dep-a"), content=payload
            )
            assert response.json() == {
                "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }

            async def chunks():  # type: ignore[no-untyped-def]
                for index in range(50):
                    yield bytes([index]) * 10_000

            response = await client.post(
                url(server.port, "/echo"), headers=host("dep-a"), content=chunks()
            )
            expected = b"".join(bytes([i]) * 10_000 for i in range(50))
            assert response.json()["sha256"] == hashlib.sha256(expected).hexdigest()
            big = await client.get(url(server.port, "/big?n=20000000"), headers=host("dep-a"))
            assert len(big.content) == 20_000_000

    run(main)


def test_websocket_upgrade_is_tunnelled() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            uri = f"ws://dep-a.phemeral.localhost:{server.port}/ws"
            async with websockets.connect(uri, host="127.0.0.1", port=server.port) as ws:
                await ws.send("ping")
                assert await ws.recv() == "a:ping"
                await ws.send(b"\x00" * 100_000)
                assert await ws.recv() == b"\x00" * 100_000
            await asyncio.sleep(0.1)
            assert server.router.backends.in_flight["dep-a"] == 0  # type: ignore[attr-defined]

    run(main)


H = b"Host: dep-a.phemeral.localhost\r\n"
MALFORMED = [
    # CL + TE with a smuggled request hidden in the body
    (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
        400,
    ),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Host: other.phemeral.localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x@dep-a.phemeral.localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: dep_a.phemeral.localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: d\xc3\xa9p.phemeral.localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: .dep-a.phemeral.localhost\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: dep-a.phemeral.localhost\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\rX: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"X-A: \x00\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70_000, 431),  # never-ending head
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        400,
    ),
    (b"CONNECT dep-a.phemeral.localhost:443 HTTP/1.1\r\n" + H + b"\r\n", 405),
]


def test_malformed_requests_get_an_error_and_a_closed_connection() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            for raw, status in MALFORMED:
                # raw_request returns only once the router closed the connection.
                response = await raw_request(server.port, raw)
                assert status_of(response) == status, raw[:80]
                head, body = response.split(b"\r\n\r\n", 1)
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                assert len(body) == length, raw[:80]  # one answer, nothing after it
                assert b"connection: close" in response
                assert b"smuggled" not in response

    run(main)


def test_absolute_form_routes_on_the_authority() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            raw = (
                b"GET http://dep-a.phemeral.localhost/headers HTTP/1.1\r\n"
                b"Host: phemeral.localhost\r\nConnection: close\r\n\r\n"
            )
            response = await raw_request(server.port, raw)
        assert status_of(response) == 200
        headers = dict(json.loads(response.split(b"\r\n\r\n", 1)[1])["headers"])
        assert headers["host"] == "dep-a.phemeral.localhost"

    run(main)


def test_http10_client_gets_a_dechunked_close_delimited_body() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            response = await raw_request(
                server.port,
                b"GET /stream?n=2 HTTP/1.0\r\nHost: dep-a.phemeral.localhost\r\n\r\n",
            )
            nohost = await raw_request(server.port, b"GET / HTTP/1.0\r\n\r\n")
        head, body = response.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding" not in head.lower()
        assert body == b"data: 0\n\ndata: 1\n\n"
        assert status_of(nohost) == 404  # never a default app

    run(main)


def test_wake_queue_bound_and_deadline() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a}, start_delay=0.5)
            limits = RouterLimits(wake_queue_limit=2, wake_deadline=5)
            sink = LogSinkTestDouble()
            async with router(snapshot({"dep-a": OK}), backends, cp, limits, sink) as server:

                async def one() -> httpx.Response:
                    async with httpx.AsyncClient() as client:
                        return await client.get(url(server.port), headers=host("dep-a"))

                responses = await asyncio.gather(*(one() for _ in range(4)))
                codes = sorted(r.status_code for r in responses)
                assert codes == [200, 200, 503, 503]
                busy = next(r for r in responses if r.status_code == 503)
                assert busy.headers["retry-after"] == "2"
                assert backends.ensure_calls == 1  # one shared start
            waking = [line.message for line in sink.lines if "wake" in line.message]
            assert len(waking) == 2 and waking[0].startswith("GET / 200 ")
            assert all(
                line.stream == "router" and line.deployment_id == "dep-a" for line in sink.lines
            )

            backends = BackendsTestDouble({"dep-a": a}, start_delay=3)
            limits = RouterLimits(wake_deadline=0.3)
            async with router(snapshot({"dep-a": OK}), backends, cp, limits) as server:
                started = time.monotonic()
                response = await raw_request(
                    server.port, b"GET / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
                )
                assert status_of(response) == 503 and b"retry-after: 5" in response
                assert time.monotonic() - started < 2

    run(main)


def test_runtime_refusal_is_a_503_not_a_hang() -> None:
    async def main() -> None:
        async with app_server("cp") as cp:
            backends = BackendsTestDouble({}, fail=Unavailable("crash loop"))
            async with router(snapshot({"dep-a": OK}), backends, cp) as server:
                response = await raw_request(
                    server.port, b"GET / HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
                )
        assert status_of(response) == 503
        assert b"crash loop" not in response
        assert backends.in_flight == {"dep-a": 0}

    run(main)


def test_timeouts_and_unreachable_apps() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            dead = type(a)(host="127.0.0.1", port=1)  # nothing listens on port 1
            backends = BackendsTestDouble({"dep-a": a, "dep-dead": dead})
            limits = RouterLimits(first_byte_timeout=0.5)
            async with router(
                snapshot({"dep-a": OK, "dep-dead": OK}), backends, cp, limits
            ) as server:
                started = time.monotonic()
                slow = await raw_request(
                    server.port, b"GET /slow?q=5 HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
                )
                assert status_of(slow) == 504
                assert time.monotonic() - started < 3
                unreachable = await raw_request(
                    server.port, b"GET / HTTP/1.1\r\nHost: dep-dead.phemeral.localhost\r\n\r\n"
                )
                assert status_of(unreachable) == 502
            assert backends.in_flight == {"dep-a": 0, "dep-dead": 0}

    run(main)


def test_a_stalled_stream_is_cut_after_the_idle_timeout() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            limits = RouterLimits(idle_timeout=0.5)
            async with router(snapshot({"dep-a": OK}), backends, cp, limits) as server:
                started = time.monotonic()
                raw = b"GET /stall HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n"
                response = await raw_request(server.port, raw, timeout=10)
                assert time.monotonic() - started < 5
        assert status_of(response) == 200 and b"first" in response
        assert not response.endswith(b"0\r\n\r\n")  # cut, not completed
        assert backends.in_flight == {"dep-a": 0}

    run(main)


def test_expect_continue_is_relayed() -> None:
    async def main() -> None:
        async with (
            app_server("cp") as cp,
            app_server("a") as a,
            router(snapshot({"dep-a": OK}), BackendsTestDouble({"dep-a": a}), cp) as server,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n"
                b"Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"hello")
            rest = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
        assert status_of(rest) == 200 and b'"size": 5' in rest

    run(main)


def test_client_disconnect_cancels_the_upstream_request() -> None:
    async def main() -> None:
        async with app_server("cp") as cp, app_server("a") as a:
            backends = BackendsTestDouble({"dep-a": a})
            async with router(snapshot({"dep-a": OK}), backends, cp) as server:
                _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /slow?q=10 HTTP/1.1\r\nHost: dep-a.phemeral.localhost\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)
                assert backends.in_flight["dep-a"] == 1
                writer.close()
                await asyncio.sleep(0.2)
                assert backends.in_flight["dep-a"] == 0
                assert server.router.pool.idle_count("dep-a") == 0  # that connection was closed

    run(main)


def test_slow_head_times_out() -> None:
    async def main() -> None:
        async with app_server("cp") as cp:
            limits = RouterLimits(header_timeout=0.5)
            async with router(snapshot(), BackendsTestDouble({}), cp, limits) as server:
                started = time.monotonic()
                response = await raw_request(server.port, b"GET / HTTP/1.1\r\nHost: local")
                assert status_of(response) == 408
                assert time.monotonic() - started < 3

    run(main)
