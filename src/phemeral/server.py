"""`phemeral serve`: one process that runs the control plane and everything plugged into it.

Two pieces compose the process:

- `control_plane(settings, builder=, runtime_factory=)` (async context manager): opens the store
  (migrations, reconciliation of builds a previous process left `building`), creates the admin
  token, starts the log writer, the build queue and the runtime (handing it every release), and
  publishes the first routing snapshot; it closes them all in reverse on exit.
- `serve_api(cp, ...)`: serves the HTTP API (plus any extra routers, e.g. the dashboard) with
  uvicorn on a TCP port or a Unix socket until cancelled.

`run(settings)` serves the API alone on the public port; `run_platform(settings)` puts the
router in front and attaches the runtime and the dashboard (one port for everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

import uvicorn
from fastapi import APIRouter

from phemeral.api import create_app
from phemeral.api.auth import ensure_admin_token
from phemeral.build import cache, workspace
from phemeral.deploys import (
    Builder,
    BuildQueue,
    ControlPlane,
    RuntimeControl,
    publish,
    reconcile_after_restart,
    releases,
)
from phemeral.deploys.processes import ProcessSync
from phemeral.deploys.services import start_services, stop_services
from phemeral.models import RuntimeLogSink
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter

log = logging.getLogger("phemeral.server")


class ManagedRuntime(RuntimeControl, Protocol):
    """`phemeral.runtime.supervisor.Runtime` as the server drives it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


RuntimeFactory = Callable[[Settings, RuntimeLogSink], ManagedRuntime]


def open_control_plane(settings: Settings, *, builder: Builder | None = None) -> ControlPlane:
    """Data dir, database (migrated), secret key, log writer; builds left over are failed."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o711)  # app uids traverse to apps/…/releases; nothing else is readable
    store = Store.connect(settings.database_uri)
    migrate(store)
    if settings.database_url is None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{data_dir / 'phemeral.db'}{suffix}").chmod(0o600)
    logs = LogWriter(store, runtime_log_cap=settings.runtime_log_cap)
    cp = ControlPlane(
        settings=settings, store=store, box=SecretBox.open(data_dir), logs=logs, builder=builder
    )
    workspace.remove_leftovers(data_dir)  # mounts of builds a crash interrupted
    cache.remove_leftovers(data_dir)
    interrupted = reconcile_after_restart(cp)
    if interrupted:
        log.warning("%d build(s) interrupted by the restart marked failed", len(interrupted))
    return cp


def default_builder() -> Builder | None:
    """`phemeral.build.pipeline.build` when that module is installed."""
    if importlib.util.find_spec("phemeral.build.pipeline") is None:
        return None
    build: Builder = importlib.import_module("phemeral.build.pipeline").build
    return build


@contextlib.asynccontextmanager
async def control_plane(
    settings: Settings,
    *,
    builder: Builder | None = None,
    runtime_factory: RuntimeFactory | None = None,
) -> AsyncIterator[ControlPlane]:
    """The running control plane: store, token, logs, build queue, runtime, first snapshot.

    ``runtime_factory`` is called with the settings and the runtime log sink (`cp.logs`);
    ``phemeral.runtime.supervisor.Runtime`` fits as is.
    """
    cp = await asyncio.to_thread(open_control_plane, settings, builder=builder or default_builder())
    try:
        token_path = await asyncio.to_thread(ensure_admin_token, cp.store, settings.data_dir)
        print(f"admin token: {token_path} (mode 0600)", flush=True)
        if cp.builder is None:
            log.warning("no builder installed: new deployments will fail until one is attached")
        cp.logs.start()
        failed = await asyncio.to_thread(start_services, cp)
        for message in failed:
            print(f"backing service failed to start: {message}", flush=True)
        cp.queue = BuildQueue(cp)
        runtime = runtime_factory(settings, cp.logs) if runtime_factory else None
        if runtime is not None:
            await runtime.start()
            cp.runtime = runtime
            for release in await asyncio.to_thread(releases, cp):
                runtime.register(release)
            cp.process_sync = ProcessSync(cp)
            cp.listeners.append(cp.process_sync.poke)
        await asyncio.to_thread(publish, cp)
        try:
            yield cp
        finally:
            await cp.queue.close()
            if cp.process_sync is not None:
                await cp.process_sync.close()
            if runtime is not None:
                await runtime.close()
            await asyncio.to_thread(stop_services, cp)
    finally:
        await asyncio.to_thread(cp.logs.close)
        cp.store.close()


async def serve_api(
    cp: ControlPlane,
    *,
    host: str | None = None,
    port: int | None = None,
    uds: str | None = None,
    routers: Sequence[APIRouter] = (),
) -> None:
    """Serve `/api` (and ``routers``, e.g. the dashboard's) until cancelled.

    Binds ``uds`` (a Unix socket path) when given, else ``host:port`` (default: the settings').
    """
    # on the private Unix socket only our router reaches the API: its X-Forwarded-For is true
    app = create_app(cp, trust_forwarded=uds is not None)
    for router in routers:
        app.include_router(router)
    config = uvicorn.Config(
        app,
        host=host or cp.settings.host,
        port=port or cp.settings.port,
        uds=uds,
        log_level=os.environ.get("PHEMERAL_LOG_LEVEL", "info").lower(),
        lifespan="off",
        proxy_headers=False,  # the gate decides whose X-Forwarded-For to believe
        timeout_graceful_shutdown=5,
    )
    await uvicorn.Server(config).serve()


async def run(settings: Settings) -> None:
    """`phemeral serve`: the control plane and its API on ``settings.host:settings.port``."""
    async with control_plane(settings) as cp:
        await serve_api(cp)


async def run_platform(settings: Settings) -> None:
    """The whole platform on one port: router in front, runtime, builder, API and dashboard.

    The router owns ``settings.host:settings.port``; control-plane hosts reach the API and the
    dashboard over a private Unix socket, deployment hosts reach the runtime's instances.
    """
    from phemeral.models import Upstream
    from phemeral.router import serve_router
    from phemeral.runtime.supervisor import Runtime
    from phemeral.tls.manager import https_for
    from phemeral.tls.pem import certificate_from_files

    wildcard = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        wildcard = certificate_from_files(settings.tls_cert, settings.tls_key)
    private = Path(tempfile.mkdtemp(prefix="phemeral-api-"))  # short path: sun_path ≤ 107
    sock = str(private / "api.sock")
    try:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            assert cp.snapshot is not None and isinstance(cp.runtime, Runtime)
            router = await serve_router(
                host=settings.host,
                port=settings.port,
                snapshot=cp.snapshot,
                backends=cp.runtime,
                control_plane=Upstream(unix_path=sock),
                log_sink=cp.logs,
                https_port=settings.https_port,
                certificates=[] if wildcard is None else [wildcard],
            )
            cp.listeners.append(router.update)
            try:
                async with https_for(cp, router):
                    await serve_api(cp, uds=sock)
            finally:
                await router.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)
