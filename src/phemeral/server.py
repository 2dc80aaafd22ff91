"""The control plane's composition root, and `phemeral serve`'s entry point.

`phemeral serve` (`run_platform`) runs the data plane process (`phemeral.dataplane.process`:
router + runtime), which starts the control plane as a child process (`run_control_plane`).
The control plane is composed of:

- `control_plane(settings, builder=, runtime_factory=)` (async context manager): opens the store
  (migrations, reconciliation of builds a previous process left `building`), creates the admin
  token, starts the log writer, the build queue, the routing `Publisher` and the runtime
  (handing it every release), and publishes the first routing snapshot; it closes them all in
  reverse on exit.
- `serve_api(cp, ...)`: serves the HTTP API (plus any extra routers, e.g. the dashboard) with
  uvicorn on a TCP port or a Unix socket until cancelled.

`run(settings)` serves the API alone on the public port; `run_control_plane` serves it and the
dashboard on the data plane's private Unix socket, its runtime the data plane's
(`phemeral.dataplane.remote.RemoteRuntime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

import uvicorn
from fastapi import APIRouter

from phemeral import network
from phemeral.api import create_app
from phemeral.api.auth import ensure_admin_token
from phemeral.build import cache, workspace
from phemeral.deploys import (
    Builder,
    BuildQueue,
    ControlPlane,
    Publisher,
    RuntimeControl,
    SnapshotListener,
    publish,
    reconcile_after_restart,
    releases,
)
from phemeral.deploys.processes import ProcessSync
from phemeral.deploys.reporting import report_interrupted
from phemeral.deploys.services import start_services, stop_services
from phemeral.models import RoutingSnapshot, RuntimeLogSink
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


def open_store(settings: Settings) -> Store:
    """Data dir and database (migrated); shared by the control plane and the data plane."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o711)  # app uids traverse to apps/…/releases; nothing else is readable
    store = Store.connect(settings.database_uri)
    migrate(store)
    if settings.database_url is None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{data_dir / 'phemeral.db'}{suffix}").chmod(0o600)
    return store


def open_control_plane(settings: Settings, *, builder: Builder | None = None) -> ControlPlane:
    """Data dir, database (migrated), secret key, log writer; builds left over are failed."""
    data_dir = settings.data_dir
    store = open_store(settings)
    logs = LogWriter(store, runtime_log_cap=settings.runtime_log_cap)
    cp = ControlPlane(
        settings=settings, store=store, box=SecretBox.open(data_dir), logs=logs, builder=builder
    )
    workspace.remove_leftovers(data_dir)  # mounts of builds a crash interrupted
    cache.remove_leftovers(data_dir)
    cp.interrupted = reconcile_after_restart(cp)
    if cp.interrupted:
        log.warning("%d build(s) interrupted by the restart marked failed", len(cp.interrupted))
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
    listeners: Sequence[SnapshotListener] = (),
) -> AsyncIterator[ControlPlane]:
    """The running control plane: store, token, logs, build queue, runtime, first snapshot.

    ``runtime_factory`` is called with the settings and the runtime log sink (`cp.logs`);
    ``phemeral.runtime.supervisor.Runtime`` fits as is. ``listeners`` get every routing
    snapshot, the first one included.
    """
    cp = await asyncio.to_thread(open_control_plane, settings, builder=builder or default_builder())
    try:
        token_path = await asyncio.to_thread(ensure_admin_token, cp.store, settings.data_dir)
        print(f"admin token: {token_path} (mode 0600)", flush=True)
        if cp.builder is None:
            log.warning("no builder installed: new deployments will fail until one is attached")
        cp.logs.start()
        cp.listeners.extend(listeners)
        failed = await asyncio.to_thread(start_services, cp)
        for message in failed:
            print(f"backing service failed to start: {message}", flush=True)
        cp.queue = BuildQueue(cp)
        publisher = cp.publisher = Publisher(cp)
        runtime = runtime_factory(settings, cp.logs) if runtime_factory else None
        if runtime is not None:
            await runtime.start()
            cp.runtime = runtime
            for release in await asyncio.to_thread(releases, cp):
                runtime.register(release)
            cp.process_sync = ProcessSync(cp)
            cp.listeners.append(cp.process_sync.poke)
        await asyncio.to_thread(publish, cp)
        if cp.interrupted:  # their pending commit statuses become failures
            await report_interrupted(cp)
        try:
            yield cp
        finally:
            await cp.queue.close()
            await publisher.close()
            if cp.process_sync is not None:
                await cp.process_sync.close()
            if runtime is not None:
                await runtime.close()
            await asyncio.to_thread(stop_services, cp)
            # the platform's network namespaces and nft table (builds' and apps' alike)
            await asyncio.to_thread(network.close_for_data_dir, settings.data_dir)
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
        log_level=cp.settings.log_level,
        lifespan="off",
        proxy_headers=False,  # the gate decides whose X-Forwarded-For to believe
        timeout_graceful_shutdown=5,
    )
    await uvicorn.Server(config).serve()


async def run_platform(settings: Settings) -> None:
    """`phemeral serve`: the data plane (router + runtime) and, as its child, the control plane."""
    from phemeral.dataplane.process import run_dataplane

    await run_dataplane(settings)


async def run_control_plane(settings: Settings, dataplane: str, api: str) -> None:
    """The control plane process: API and dashboard on the Unix socket ``api``; the runtime
    and the routers are the data plane's, reached over its socket ``dataplane``."""
    from phemeral.dataplane.remote import RemoteRuntime
    from phemeral.tls.manager import https_for

    remotes: list[RemoteRuntime] = []

    def runtime_factory(_settings: Settings, sink: RuntimeLogSink) -> ManagedRuntime:
        remotes.append(RemoteRuntime(dataplane, sink))
        return remotes[0]

    def to_dataplane(snapshot: RoutingSnapshot) -> None:
        remotes[0].publish(snapshot)

    async with control_plane(
        settings, runtime_factory=runtime_factory, listeners=[to_dataplane]
    ) as cp:
        Path(api).unlink(missing_ok=True)  # left by a control plane that was killed
        async with https_for(cp, remotes[0]):  # certificates and ACME answers → every router
            await serve_api(cp, uds=api)
