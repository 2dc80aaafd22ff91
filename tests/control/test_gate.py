"""Auth before body, body caps while streaming, and the auth-failure rate limit: the pure rules,
then a real `phemeral serve` (router in front, the API behind it) under attack."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from phemeral.api.gate import BodyLimits, body_limit, client_address, needs_token
from phemeral.api.ratelimit import AuthFailures, FailurePolicy

from .serverkit import Server, tar_gz, unique

# -- pure rules ---------------------------------------------------------------------------------


def test_which_paths_need_a_token() -> None:
    for path in ("/api/projects", "/api/projects/x/deployments", "/api/deployments/a/promote"):
        assert needs_token(path), path
    for path in ("/api/health", "/api/openapi.json", "/api/docs", "/api/webhooks/github", "/"):
        assert not needs_token(path), path
    assert not needs_token("/login") and not needs_token("/apis")
    assert needs_token("/api/webhooks/github/x") and needs_token("/api")


def test_body_limits_per_endpoint() -> None:
    limits = BodyLimits.for_uploads_of(200)
    assert body_limit("POST", "/api/projects/p/deployments", limits) > 200 << 20
    assert body_limit("GET", "/api/projects/p/deployments", limits) == 1 << 20
    assert body_limit("POST", "/api/projects", limits) == 1 << 20
    assert body_limit("POST", "/api/webhooks/github", limits) == 25 << 20
    assert body_limit("POST", "/login", limits) == 1 << 20
    assert body_limit("POST", "/api/services/db/restore", limits) > 8 << 30


def test_client_address_believes_x_forwarded_for_only_behind_our_router() -> None:
    scope = {"client": ("10.0.0.9", 5000), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert client_address(scope, trust_forwarded=False) == "10.0.0.9"
    assert client_address(scope, trust_forwarded=True) == "1.2.3.4"
    chained = {"client": None, "headers": [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4")]}
    assert client_address(chained, trust_forwarded=True) == "1.2.3.4"  # the router's is last
    assert client_address({"client": None, "headers": []}, trust_forwarded=True) == "unknown"


def test_failures_block_then_double_then_forgive() -> None:
    policy = FailurePolicy(max_failures=3, window=60, block=10, max_block=40)
    table = AuthFailures(policy)
    assert table.failed("a", 0) is None and table.failed("a", 1) is None
    assert table.retry_after("a", 1) is None
    assert table.failed("a", 2) == 10  # the third failure blocks
    assert table.retry_after("a", 5) == 7 and table.retry_after("b", 5) is None
    assert table.failed("a", 6) == 20  # failing while blocked doubles the block
    assert table.retry_after("a", 26) is None  # served its time
    for t in (30, 31):
        assert table.failed("a", t) is None
    assert table.failed("a", 32) == 40  # blocked again: twice the last block, capped
    assert table.failed("a", 33) == 40
    # long good behaviour: back to the first block
    for t in (200, 201):
        table.failed("a", t)
    assert table.failed("a", 202) == 10
    # failures spread wider than the window never block
    slow = AuthFailures(policy)
    assert all(slow.failed("s", t * 61.0) is None for t in range(10))


def test_failure_table_is_bounded() -> None:
    table = AuthFailures(FailurePolicy(max_failures=2, block=10, max_addresses=100))
    for i in range(1000):
        table.failed(f"10.0.{i // 250}.{i % 250}", float(i))
    assert len(table.records) <= 100
    table.failed("x", 2000.0)
    assert table.failed("x", 2000.5) == 10  # a new address is still counted


# -- a real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("data-gate")
    srv = Server(data_dir=data, database_url=None, extra_env={"PHEMERAL_MAX_UPLOAD_MB": "1"})
    srv.start()
    yield srv
    srv.kill()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_kb(pid: int) -> int:
    """RSS of ``phemeral serve`` and every process under it (the platform may be more than one
    process: the API behind the router, for instance)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            todo += _children(current)
    return total


def raw_post(port: int, path: str, size: int, *, chunked: bool, headers: str = "") -> bytes:
    """Send a ``size``-byte body (as far as the server lets us); the response's first bytes."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: phemeral.localhost\r\n{headers}"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    piece = b"x" * (1 << 20)
    try:
        sock.sendall(head.encode())
        sent = 0
        while sent < size:
            sock.sendall(b"100000\r\n" + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection without reading the rest: the point
    sock.settimeout(30)
    out = b""
    try:
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            out += data
    except OSError:
        pass
    finally:
        sock.close()
    return out


def status_and_error(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


@pytest.mark.slow
def test_three_300_mb_unauthenticated_bodies_cost_the_platform_no_memory(server: Server) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    before = rss_kb(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    answers: list[bytes] = []
    senders = [
        threading.Thread(
            target=lambda c=chunked: answers.append(
                raw_post(server.port, "/api/projects", 300 << 20, chunked=c)
            )
        )
        for chunked in (False, False, True)
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=120)
    done.set()
    sampler.join()
    assert len(answers) == 3
    for raw in answers:
        assert status_and_error(raw) == (401, "unauthorized"), raw[:200]
    assert peak - before < 50 * 1024, f"RSS grew by {(peak - before) // 1024} MB"


def test_bodies_over_the_cap_are_413_declared_or_streamed(server: Server) -> None:
    auth = f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
    declared = raw_post(server.port, "/api/projects", 2 << 20, chunked=False, headers=auth)
    assert status_and_error(declared) == (413, "payload_too_large")
    streamed = raw_post(server.port, "/api/projects", 3 << 20, chunked=True, headers=auth)
    assert status_and_error(streamed) == (413, "payload_too_large")
    # a body under the cap still works
    with server.client() as api:
        assert api.post("/projects", json={"name": unique("ok")}).status_code == 201


def test_uploads_have_their_own_cap(server: Server) -> None:
    with server.client() as api:
        name = unique("up")
        files = {"archive": ("a.tar.gz", os.urandom(2 << 20), "application/gzip")}
        response = api.post(f"/projects/{name}/deployments", files=files)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
        small = api.post(
            f"/projects/{name}/deployments",
            files={"archive": ("a.tar.gz", tar_gz({"a.txt": "hi"}), "application/gzip")},
            data={"create_project": "true"},
        )
        assert small.status_code == 201, small.text


def test_repeated_failures_are_429_per_client_address(server: Server) -> None:
    """Last in the module: it blocks 127.0.0.1 on this server."""
    url = server.url + "/api/projects"
    codes = [httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code]
    while codes[-1] == 401 and len(codes) < 20:
        codes.append(httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code)
    # 10 failures a minute per address (the earlier tests here used a few of them)
    assert codes[-1] == 429 and len(codes) <= 10, codes
    blocked = httpx.get(url, headers={"Authorization": f"Bearer {server.token}"})
    assert blocked.status_code == 429  # even the right token: a guesser learns nothing
    assert blocked.json()["error"]["code"] == "too_many_failures"
    assert 1 <= int(blocked.headers["retry-after"]) <= 900
    # an address the client claims is not believed: the router sets X-Forwarded-For itself
    spoofed = httpx.get(
        url, headers={"Authorization": f"Bearer {server.token}", "X-Forwarded-For": "9.9.9.9"}
    )
    assert spoofed.status_code == 429
    assert httpx.get(server.url + "/api/health").status_code == 200  # public paths still answer


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("data-gate-hook"), database_url=None).start()
    yield srv
    srv.kill()


def test_bad_webhook_signatures_count_as_failures(webhook_server: Server) -> None:
    """Each unsigned delivery costs an HMAC per project: an address that keeps sending them is
    blocked, and then refused before its body is read."""
    url = webhook_server.url + "/api/webhooks/github"
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    codes = [httpx.post(url, content=b"{}", headers=headers).status_code]
    while codes[-1] == 401 and len(codes) < 20:
        codes.append(httpx.post(url, content=b"{}", headers=headers).status_code)
    assert codes == [401] * 10 + [429], codes  # the 10th failure blocks the address
    big = raw_post(webhook_server.port, "/api/webhooks/github", 20 << 20, chunked=False)
    assert status_and_error(big) == (429, "too_many_failures")
