"""`phemeral serve`: the data plane process, and the processes it keeps running beside it.

This process owns what must keep serving: the public port (router), the runtime (every app
process, wakes, idle stops) and the routing table. It starts, before anything else answers:

1. the routing table saved by the last run (``{data_dir}/routing.json``), else one computed
   from the database;
2. the store (migrated), the runtime log writer, the runtime (leftovers of an earlier run
   replaced) with every successful release registered — read from the database, so apps wake
   even while the control plane is down;
3. its Unix socket (`DataPlaneService`) and the router on the public port.

Then it starts the control plane (API, dashboard, builder, store use-cases) as a child process
(`phemeral.dataplane.child control`), restarted whenever it exits, and ``router_processes - 1``
router workers (`phemeral.dataplane.child router`) on the same port with ``SO_REUSEPORT``.
A control plane that crashes, restarts or is upgraded takes nothing down with it; the routers
answer requests for the API with 502 until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phemeral.dataplane import handover, routes_file
from phemeral.dataplane.children import Child
from phemeral.dataplane.service import DataPlaneService
from phemeral.models import RoutingSnapshot, Upstream
from phemeral.settings import Settings, load_settings

if TYPE_CHECKING:
    from phemeral.runtime.supervisor import Runtime

log = logging.getLogger("phemeral.dataplane")

DRAIN_TIMEOUT = 1.0  # after a handover: how long our keep-alive clients may take to leave
STOP_GRACE = 1.0  # on SIGTERM: how long apps may take to exit before SIGKILL


# -- what the children are told ----------------------------------------------------------------


def settings_to_json(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = os.pathsep.join(str(p) for p in value)
        out[f.name] = value
    return out


def settings_from_json(data: dict[str, Any]) -> Settings:
    return load_settings(environ={}, overrides=data)


def write_child_config(path: Path, settings: Settings, dataplane: str, api: str) -> None:
    body = {"settings": settings_to_json(settings), "dataplane": dataplane, "api": api}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(body, file)


def read_child_config(path: Path) -> tuple[Settings, str, str]:
    body = json.loads(path.read_text())
    return settings_from_json(body["settings"]), str(body["dataplane"]), str(body["api"])


# -- the public socket --------------------------------------------------------------------------


def public_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The router's listening socket; ``reuse_port`` lets router workers bind the same port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# -- the process --------------------------------------------------------------------------------


async def run_dataplane(settings: Settings) -> None:
    """Serve until cancelled, or until a successor took over (`handover`); then stop the
    children, the router and every app, in order."""
    from phemeral.build import workspace
    from phemeral.dataplane.logrelay import LogRelay
    from phemeral.dataplane.registry import ReleaseRegistry
    from phemeral.router import serve_router
    from phemeral.runtime import paging
    from phemeral.runtime.supervisor import Runtime
    from phemeral.secrets import SecretBox

    started = time.monotonic()
    static_certificates = []
    if settings.tls_cert is not None and settings.tls_key is not None:
        from phemeral.tls.pem import certificate_from_files

        static_certificates.append(certificate_from_files(settings.tls_cert, settings.tls_key))
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o711)  # app uids traverse to apps/…/releases; nothing else is readable
    workers = max(1, settings.router_processes)
    # The running data plane of this data dir (an upgrade) hands its sockets over; else we
    # listen first: a request that arrives while the rest starts waits in the backlog.
    predecessor = await asyncio.to_thread(handover.take_over, data_dir)
    sock = predecessor.socket_for(settings.port) if predecessor else None
    if sock is None:
        sock = public_socket(settings.host, settings.port, reuse_port=workers > 1)
    https_sock = None
    if settings.https_port is not None:
        https_sock = predecessor.socket_for(settings.https_port) if predecessor else None
        if https_sock is None:
            https_sock = public_socket(settings.host, settings.https_port, reuse_port=workers > 1)
    private = Path(tempfile.mkdtemp(prefix="phemeral-"))  # short path: sun_path ≤ 107
    dataplane_sock = str(private / "dataplane.sock")
    api_sock = str(private / "api.sock")
    config = private / "children.json"
    children: list[Child] = []
    handed_over = asyncio.Event()
    successor: handover.HandoverServer | None = None
    swap: Path | None = None  # the data dir's swap file, when this process turned it on
    try:
        snapshot = routes_file.load(data_dir)
        if snapshot is None or snapshot.base_domain != settings.base_domain:
            snapshot = RoutingSnapshot(settings.base_domain, {}, {})  # until the control plane's
        registry = ReleaseRegistry(data_dir, SecretBox.open(data_dir))
        relay = LogRelay()
        runtime = Runtime(settings, relay)
        await runtime.start()
        try:
            known = await asyncio.to_thread(registry.load_all)
            for release in known:
                runtime.register(release)
            current = set(await asyncio.to_thread(registry.load_current))
            if predecessor is not None:  # its running apps, ready before we take requests
                await _wake(runtime, predecessor.running, settings.boot_timeout)
            service = DataPlaneService(
                runtime, data_dir, snapshot, relay, registry, static_certificates
            )
            await service.start(dataplane_sock)
            router = await serve_router(
                host=settings.host,
                port=settings.port,
                snapshot=snapshot,
                backends=runtime,
                control_plane=Upstream(unix_path=api_sock),
                log_sink=relay,
                sock=sock,
                https_sock=https_sock,
                certificates=static_certificates,
            )
            service.routers.append(router)
            log.info("data plane serving after %.0f ms", (time.monotonic() - started) * 1000)
            extras: asyncio.Task[None] | None = None
            try:
                successor = handover.HandoverServer(
                    str(private / "handover.sock"),
                    [s for s in (sock, https_sock) if s is not None],
                    runtime.running_deployments,
                    handed_over.set,
                )
                successor.start()
                handover.advertise(data_dir, successor.path)
                if predecessor is not None:
                    predecessor.stop()
                    await predecessor.exited()  # one control plane per data dir
                if settings.page_out_after > 0:  # the paged tier writes to swap
                    swap = await asyncio.to_thread(
                        paging.ensure_swap_file, data_dir, settings.swap_file_mb
                    )
                # Background, most recently used first; after the swap is on: past the
                # template budget the warming fills the swap's room, which it reads at once.
                runtime.warm_templates(current)
                extras = asyncio.create_task(
                    runtime.run_processes([r for r in known if r.deployment_id in current])
                )
                # Mounts of builds a killed control plane left (its own start clears them
                # too, but a `mount` it had started may have finished after it died).
                await asyncio.to_thread(workspace.remove_leftovers, data_dir)
                write_child_config(config, settings, dataplane_sock, api_sock)
                module = [sys.executable, "-m", "phemeral.dataplane.child"]
                children.append(Child("control plane", [*module, "control", str(config)]))
                for index in range(1, workers):
                    children.append(
                        Child(f"router {index}", [*module, "router", str(config), str(index)])
                    )
                for child in children:
                    child.start()
                await handed_over.wait()
                log.info("a new data plane took over; stopping")
            finally:
                if handed_over.is_set():  # the successor accepts now: let our clients go
                    await router.drain(DRAIN_TIMEOUT)
                if extras is not None:
                    extras.cancel()
                for child in reversed(children):
                    await child.stop()
                if children:  # a control plane stopped by SIGKILL mid-build left its mounts
                    await asyncio.to_thread(workspace.remove_leftovers, data_dir)
                await router.close()
                await service.close()
        finally:
            if successor is not None:
                await successor.close()
            handover.withdraw(data_dir)
            # After a handover our apps have no clients left to serve: they stop gracefully
            # (`stop_timeout`). On SIGTERM nothing serves until this process exited and the
            # next one started: they get `STOP_GRACE`.
            try:
                await runtime.close(None if handed_over.is_set() else STOP_GRACE)
            finally:
                if swap is not None and not handed_over.is_set():  # a successor keeps it on
                    await asyncio.to_thread(paging.release_swap_file, swap)
    except BaseException:
        if predecessor is not None:
            predecessor.abandon()  # before `stop`: the old one goes on serving
        raise
    finally:
        sock.close()
        if https_sock is not None:
            https_sock.close()
        shutil.rmtree(private, ignore_errors=True)


async def _wake(runtime: Runtime, deployment_ids: list[str], timeout: float) -> None:
    """Start these deployments, bounded; one that fails (or is unknown here) is skipped: its
    next request wakes it as usual."""
    if not deployment_ids:
        return
    tasks = [asyncio.ensure_future(runtime.ensure_running(d)) for d in deployment_ids]
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("could not start a deployment before taking over: %s", task.exception())


async def run_router_worker(settings: Settings, dataplane: str, api: str) -> None:
    """One more router on the public port (``SO_REUSEPORT``), its backends the data plane's."""
    from phemeral.dataplane.remote import RemoteBackends, connect
    from phemeral.router import serve_router

    channel = await connect(dataplane)
    reading = asyncio.create_task(channel.run())
    backends = RemoteBackends(channel)
    snapshot, certificates, challenges = await backends.subscribe()
    sock = public_socket(settings.host, settings.port, reuse_port=True)
    https_sock = None
    if settings.https_port is not None:
        https_sock = public_socket(settings.host, settings.https_port, reuse_port=True)
    router = await serve_router(
        host=settings.host,
        port=settings.port,
        snapshot=snapshot,
        backends=backends,
        control_plane=Upstream(unix_path=api),
        log_sink=backends,
        sock=sock,
        https_sock=https_sock,
        certificates=certificates,
    )
    for host, token, answer in challenges:
        router.set_challenge(host, token, answer)
    await backends.attach(router)
    try:
        await reading  # the data plane went away: stop (it restarts us, or we die with it)
    finally:
        # Stopped (SIGTERM: a shutdown or an upgrade's handover): stop accepting and let what
        # is in flight finish, as the data plane's own router does; then close the rest.
        with contextlib.suppress(Exception):
            await router.drain(DRAIN_TIMEOUT)
        with contextlib.suppress(Exception):
            await router.close()
        await backends.close()
