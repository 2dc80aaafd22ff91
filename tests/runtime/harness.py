"""Driving a real runtime in a test: run one, send it requests, wait for a condition, swap
for the paged tier."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from phemeral.models import Release, Upstream
from phemeral.runtime import paging
from phemeral.runtime.supervisor import Runtime
from phemeral.settings import Settings

from .conftest import ListSink


async def get(upstream: Upstream, path: str = "/", timeout: float = 20) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


async def request(runtime: Runtime, deployment_id: str, path: str = "/") -> tuple[int, bytes]:
    """What the router does: ensure running, count the request in flight, forward it."""
    upstream = await runtime.ensure_running(deployment_id)
    runtime.request_started(deployment_id)
    try:
        return await get(upstream, path)
    finally:
        runtime.request_finished(deployment_id)


async def failed_request(runtime: Runtime, deployment_id: str, path: str) -> bool:
    """True when the connection ended without an HTTP answer (the server process died)."""
    try:
        status, _ = await request(runtime, deployment_id, path)
    except (OSError, ValueError, IndexError):
        return True
    return status == 0


def run_with_runtime(
    settings: Settings,
    sink: ListSink,
    body: Callable[[Runtime], Awaitable[None]],
    **options: Any,
) -> None:
    async def main() -> None:
        runtime = Runtime(settings, sink, **options)
        await runtime.start()
        try:
            await body(runtime)
        finally:
            await runtime.close()

    asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds; generous, since a loaded CI box runs several times
    slower than a quiet one (a passing wait costs only its own time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def use_in_order(runtime: Runtime, releases: list[Release]) -> None:
    """Register each, serve one request, and wait until it scaled to zero, in this order."""
    for release in releases:
        runtime.register(release, idle_timeout=0.05)
        assert (await request(runtime, release.deployment_id))[0] == 200
        await wait_until(lambda r=release: runtime.instances(r.deployment_id).state == "dormant")


@contextlib.contextmanager
def swap_for_test(tmp_path: Path, size_mb: int = 1024) -> Iterator[None]:
    """A swap file of the test's own, on for the test's length: not the host's or another
    test's (a platform under test in the other worker turns its own off when it stops, and
    the pages this test paged out would come back). 1 GiB: the sweep's learning write-outs
    hold swap too, and a budget test must still find room to page out into."""
    path = tmp_path / "test.swap"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size_mb * 1024 * 1024)
    finally:
        os.close(fd)
    subprocess.run(["mkswap", str(path)], check=True, capture_output=True, timeout=60)
    subprocess.run(["swapon", str(path)], check=True, capture_output=True, timeout=60)
    try:
        yield
    finally:
        paging.release_swap_file(path)


def has_sys_resource() -> bool:
    """This process holds CAP_SYS_RESOURCE (a container may take it away from root)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def locked_kb(pid: int) -> int:
    """``VmLck`` of a process (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    return 0
