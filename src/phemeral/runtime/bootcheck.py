"""The boot check's probe: one HTTP request to a freshly started instance."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from phemeral.errors import BootFailed
from phemeral.models import Release, Upstream
from phemeral.runtime.deployment import DeploymentRuntime


def status_of(head: bytes) -> int | None:
    """The status code of a response's first bytes (``HTTP/1.1 400 …``), None if unreadable."""
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1][:3].isdigit():
        return None
    return int(parts[1][:3])


def answer_note(status: int | None, host: str, base_domain: str, django: bool) -> str | None:
    """What the build log should add about the boot check's answer, if anything.

    Any answer passes the boot check (an app may well answer 404 on ``/``), but a 400 from
    Django almost always means ``ALLOWED_HOSTS`` leaves out the platform's host names, and every
    real request would get the same 400: say so, and how to fix it.
    """
    if status is None or status < 400:
        return None
    if status == 400 and django:
        return (
            f"warning: the app answered 400 Bad Request to Host: {host}. Django answers 400 when "
            f"ALLOWED_HOSTS does not list the host: add '.{base_domain}' (every deployment and "
            "environment domain) and any custom domain to ALLOWED_HOSTS, e.g. from a variable "
            "set with `phemeral env set`"
        )
    if status >= 500:
        return (
            f"warning: the app answered {status} to GET of its health check path: it serves, "
            "but fails that request; see its output above"
        )
    return None


def uses_django(release: Release) -> bool:
    """Whether the release serves Django: detected, or installed for a declared command."""
    if release.app is not None:
        return release.app.framework == "django"
    return any(release.venv.glob("lib/python*/site-packages/django/__init__.py"))


async def probe_http(
    dep: DeploymentRuntime,
    upstream: Upstream,
    timeout: float,
    host: str,
    path: str = "/",
    agent: str = "phemeral-boot-check",
) -> int | None:
    """Connect and send one GET of ``path``; any HTTP answer passes. An exit fails it at once.

    Returns the answer's status code (None when the status line was unreadable).
    """
    deadline = time.monotonic() + timeout
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
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
                return status_of(first.result())
            if first in done and first.exception() is None and not first.result():
                await asyncio.sleep(0.05)  # closed without answering: try again
                continue
            raise BootFailed(f"the app exited during its boot check: {dep.last_exit}")
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            writer.close()
