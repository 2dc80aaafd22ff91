"""The boot check's probe: one HTTP request to a freshly started instance."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from phemeral.errors import BootFailed
from phemeral.models import Upstream
from phemeral.runtime.deployment import DeploymentRuntime


async def probe_http(
    dep: DeploymentRuntime, upstream: Upstream, timeout: float, host: str, path: str = "/"
) -> None:
    """Connect and send one GET of ``path``; any HTTP answer passes. An exit fails it at once."""
    deadline = time.monotonic() + timeout
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}"
        "\r\nUser-Agent: phemeral-boot-check\r\nConnection: close\r\n\r\n"
    ).encode()
    while True:
        instance = dep.instance
        if instance is None or (instance.exited is not None and instance.exited.done()):
            raise BootFailed(f"the app exited during its boot check: {dep.last_exit}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.host, upstream.port), left
            )
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(request)
            await writer.drain()
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(reader.read(12))]
            if instance.exited is not None:
                waits.append(asyncio.ensure_future(asyncio.shield(instance.exited)))
            done, pending = await asyncio.wait(
                waits,
                timeout=max(0.01, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
            if not done:
                raise TimeoutError
            first = waits[0]
            if first in done and not first.exception() and first.result().startswith(b"HTTP/"):
                return
            if first in done and first.exception() is None and not first.result():
                await asyncio.sleep(0.05)  # closed without answering: try again
                continue
            raise BootFailed(f"the app exited during its boot check: {dep.last_exit}")
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            writer.close()
