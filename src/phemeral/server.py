"""`phemeral serve`: one process that runs the control plane and everything plugged into it.

`run(settings, ...)` is the composition root: open the store (migrate, reconcile), create the
admin token, start the log writer and the build queue, hand every release to the runtime,
publish the routing snapshot, and serve the API. The builder, the runtime and snapshot
listeners (the router's ``update``) are passed in, so wiring a part is one argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from phemeral.api import create_app
from phemeral.api.auth import ensure_admin_token
from phemeral.deploys import (
    Builder,
    BuildQueue,
    ControlPlane,
    RuntimeControl,
    SnapshotListener,
    publish,
    reconcile_after_restart,
    releases,
)
from phemeral.secrets import SecretBox
from phemeral.settings import Settings
from phemeral.store import Store, migrate
from phemeral.store.logs import LogWriter

log = logging.getLogger("phemeral.server")


def open_control_plane(
    settings: Settings, *, builder: Builder | None = None, runtime: RuntimeControl | None = None
) -> ControlPlane:
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
        settings=settings,
        store=store,
        box=SecretBox.open(data_dir),
        logs=logs,
        builder=builder,
        runtime=runtime,
    )
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


async def run(
    settings: Settings,
    *,
    builder: Builder | None = None,
    runtime: RuntimeControl | None = None,
    listeners: Sequence[SnapshotListener] = (),
    extra_apps: Sequence[tuple[str, FastAPI]] = (),
) -> None:
    """Serve until cancelled (Ctrl-C / SIGTERM)."""
    cp = await asyncio.to_thread(
        open_control_plane, settings, builder=builder or default_builder(), runtime=runtime
    )
    token_path = await asyncio.to_thread(ensure_admin_token, cp.store, settings.data_dir)
    print(f"admin token: {token_path} (mode 0600)", flush=True)
    if cp.builder is None:
        log.warning("no builder installed: new deployments will fail until one is attached")
    cp.logs.start()
    cp.queue = BuildQueue(cp)
    cp.listeners.extend(listeners)
    if runtime is not None:
        for release in await asyncio.to_thread(releases, cp):
            runtime.register(release)
    await asyncio.to_thread(publish, cp)
    app = create_app(cp)
    for path, sub in extra_apps:
        app.mount(path, sub)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=os.environ.get("PHEMERAL_LOG_LEVEL", "info").lower(),
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        await cp.queue.close()
        await asyncio.to_thread(cp.logs.close)
        cp.store.close()
