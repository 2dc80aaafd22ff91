"""The data plane's side of its Unix socket: what the control plane and router workers may ask.

From the control plane (`phemeral.dataplane.remote.RemoteRuntime`):

- ``attach``: this connection is the control plane's; the runtime and access log lines
  (`LogRelay`) are pushed to it as ``logs`` {lines} frames every `RELAY_INTERVAL` seconds;
- ``register`` {release}: make a deployment wakeable and record it (`ReleaseRegistry`);
- ``boot_check`` {release}: start it and require an HTTP answer; the boot lines come back as
  ``log`` frames, then the answer (or `BootFailed`);
- ``run_release`` {release}: the release phase, its lines streamed the same way;
- ``run_processes`` {releases}: the extra processes of exactly these (current) deployments;
  their ids are recorded (`ReleaseRegistry.save_current`) so a restarted data plane runs them
  again at once;
- ``instances`` {deployment_id} → `InstanceState`; ``retire`` {deployment_id} (record removed);
- ``snapshot`` {snapshot}: the new routing table; applied to every router at once and saved to
  ``{data_dir}/routing.json`` (`routes_file`) for the next start;
- ``certificates`` {certificates}: the complete set of TLS certificates to serve (the
  control plane's; until it sends one, the wildcard of ``--tls-cert``); ``challenge`` {host, token,
  key_authorization}: an ACME HTTP-01 answer. Both are kept in memory only (private keys).

From a router worker (`phemeral.dataplane.remote.RemoteBackends`):

- ``subscribe``: the current table, certificates and challenges now, then every change
  (``snapshot``, ``certificates``, ``challenge`` pushes) and ``gone`` {deployment_id} pushes
  when an upstream it was given stops serving;
- ``wake`` {deployment_id} → `Upstream` (one shared start, the runtime's own single flight);
- ``activity`` {counts: {deployment_id: [started, finished]}}: its requests since the last
  report, so idle decisions see every router's traffic; what a worker left in flight when it
  went away is counted as finished;
- ``logs`` {lines}: its access log lines, relayed with the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from phemeral.dataplane import routes_file
from phemeral.dataplane.channel import Channel
from phemeral.dataplane.logrelay import RELAY_INTERVAL, LogRelay
from phemeral.dataplane.registry import ReleaseRegistry
from phemeral.dataplane.wire import (
    Message,
    certificate_from_json,
    certificate_to_json,
    lines_from_json,
    lines_to_json,
    release_in,
    snapshot_from_json,
    snapshot_to_json,
    state_to_json,
    upstream_to_json,
)
from phemeral.errors import InvalidInput
from phemeral.models import (
    BuildLog,
    InstanceState,
    Release,
    RoutingSnapshot,
    TlsCertificate,
    Upstream,
)

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.05  # how often upstreams given to router workers are checked


class DataPlaneRuntime(Protocol):
    """What the service needs of `phemeral.runtime.supervisor.Runtime`."""

    def register(self, release: Release) -> None: ...

    async def boot_check(self, release: Release, log: BuildLog) -> None: ...

    async def run_release(self, release: Release, log: BuildLog) -> None: ...

    async def run_processes(self, current: list[Release]) -> None: ...

    def instances(self, deployment_id: str) -> InstanceState: ...

    async def retire(self, deployment_id: str) -> None: ...

    async def ensure_running(self, deployment_id: str) -> Upstream: ...

    def request_started(self, deployment_id: str) -> None: ...

    def request_finished(self, deployment_id: str) -> None: ...

    def running_upstream(self, deployment_id: str) -> Upstream | None: ...


class Routers(Protocol):
    """What the service drives in an in-process router (`phemeral.router.RouterServer`)."""

    def update(self, snapshot: RoutingSnapshot) -> None: ...

    def set_certificates(self, certificates: list[TlsCertificate]) -> None: ...

    def set_challenge(self, host: str, token: str, key_authorization: str | None) -> None: ...


class _StreamedLog:
    """A `BuildLog` whose lines go back to the caller as ``log`` frames."""

    def __init__(self, channel: Channel, request_id: object) -> None:
        self._channel = channel
        self._id = request_id

    def write(self, stage: str, message: str) -> None:
        if not self._channel.closed:
            self._channel.send({"re": self._id, "log": [stage, message]})


class DataPlaneService:
    def __init__(
        self,
        runtime: DataPlaneRuntime,
        data_dir: Path,
        snapshot: RoutingSnapshot,
        relay: LogRelay,
        registry: ReleaseRegistry,
        static_certificates: list[TlsCertificate] | None = None,
    ) -> None:
        self.runtime = runtime
        self.data_dir = data_dir
        self.snapshot = snapshot
        self.relay = relay
        self.registry = registry
        self.control: Channel | None = None  # the attached control plane
        self.routers: list[Routers] = []  # in-process
        self.static_certificates = list(static_certificates or [])
        self.issued: list[TlsCertificate] | None = None  # the control plane's set (memory only)
        self.challenges: dict[tuple[str, str], str] = {}
        self.subscribers: set[Channel] = set()
        self.snapshots_received = 0
        self._given: dict[str, Upstream] = {}  # upstreams handed out to router workers
        self._in_flight: dict[Channel, dict[str, int]] = {}
        self._save_pending: RoutingSnapshot | None = None
        self._saver: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None
        self._relay_soon = False
        self._connections: set[Channel] = set()

    async def start(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._connected, path, limit=2**20)
        Path(path).chmod(0o600)
        self._watcher = asyncio.create_task(self._watch())
        self._relaying = asyncio.create_task(self._relay_loop())
        loop = asyncio.get_running_loop()

        def soon() -> None:  # runtime lines come on this loop; one relay per loop pass
            if not self._relay_soon:
                self._relay_soon = True
                loop.call_soon(self.relay_logs)

        self.relay.on_lines = soon

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in (self._watcher, self._relaying):
            if task is not None:
                task.cancel()
        self.relay_logs()
        for channel in list(self._connections):
            channel.close()  # its reader ends: no cancelled handler tasks at shutdown
        if self._saver is not None:
            with contextlib.suppress(Exception):
                await self._saver

    # -- routing table --------------------------------------------------------------------------

    def apply_snapshot(self, snapshot: RoutingSnapshot, encoded: Message | None = None) -> None:
        """Route by ``snapshot`` in every router now; save it in the background. ``encoded``:
        its wire form when the caller has it (the router workers get it as it came)."""
        self.snapshot = snapshot
        self.snapshots_received += 1
        for router in self.routers:
            try:
                router.update(snapshot)
            except Exception:
                log.exception("a router refused the routing snapshot")
        if self.subscribers:
            wire = snapshot_to_json(snapshot) if encoded is None else encoded
            self._push({"op": "snapshot", "snapshot": wire})
        self._save_pending = snapshot
        if self._saver is None or self._saver.done():
            self._saver = asyncio.ensure_future(self._save_latest())

    def _push(self, message: Message) -> None:
        for channel in list(self.subscribers):
            with contextlib.suppress(Exception):
                channel.send(message)

    @property
    def certificates(self) -> list[TlsCertificate]:
        return self.static_certificates if self.issued is None else self.issued

    def apply_certificates(self, issued: list[TlsCertificate]) -> None:
        self.issued = issued
        certificates = self.certificates
        for router in self.routers:
            router.set_certificates(certificates)
        self._push(
            {"op": "certificates", "certificates": [certificate_to_json(c) for c in certificates]}
        )

    def apply_challenge(self, host: str, token: str, answer: str | None) -> None:
        if answer is None:
            self.challenges.pop((host, token), None)
        else:
            self.challenges[(host, token)] = answer
        for router in self.routers:
            router.set_challenge(host, token, answer)
        self._push({"op": "challenge", "host": host, "token": token, "key_authorization": answer})

    async def _save_latest(self) -> None:
        while self._save_pending is not None:
            snapshot, self._save_pending = self._save_pending, None
            try:
                await asyncio.to_thread(routes_file.save, self.data_dir, snapshot)
            except OSError:
                log.exception("could not save the routing table")

    # -- connections ----------------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = Channel(reader, writer, self._handle)
        self._connections.add(channel)
        try:
            await channel.run()
        finally:
            self._connections.discard(channel)
            self.subscribers.discard(channel)
            self._release_in_flight(channel)
            if self.control is channel:
                self.control = None

    async def _handle(self, channel: Channel, message: Message) -> Any:
        op = message.get("op")
        runtime = self.runtime
        if op == "wake":
            did = str(message["deployment_id"])
            upstream = await runtime.ensure_running(did)
            self._given[did] = upstream
            return upstream_to_json(upstream)
        if op == "activity":
            self._activity(channel, message["counts"])
            return None
        if op == "logs":
            self.relay.write(lines_from_json(message["lines"]))
            return None
        if op == "register":
            release = release_in(message["release"])
            runtime.register(release)
            await asyncio.to_thread(self.registry.save, release)
            return None
        if op == "boot_check":
            await runtime.boot_check(
                release_in(message["release"]), _StreamedLog(channel, message.get("id"))
            )
            return None
        if op == "run_release":
            await runtime.run_release(
                release_in(message["release"]), _StreamedLog(channel, message.get("id"))
            )
            return None
        if op == "run_processes":
            current = [release_in(r) for r in message["releases"]]
            await asyncio.to_thread(self.registry.save_current, [r.deployment_id for r in current])
            await runtime.run_processes(current)
            return None
        if op == "instances":
            return state_to_json(runtime.instances(str(message["deployment_id"])))
        if op == "retire":
            did = str(message["deployment_id"])
            await runtime.retire(did)
            await asyncio.to_thread(self.registry.remove, did)
            return None
        if op == "attach":
            self.control = channel
            self.relay_logs()  # what waited while no control plane was there
            return None
        if op == "snapshot":
            self.apply_snapshot(snapshot_from_json(message["snapshot"]), message["snapshot"])
            return None
        if op == "certificates":
            self.apply_certificates([certificate_from_json(c) for c in message["certificates"]])
            return None
        if op == "challenge":
            answer = message.get("key_authorization")
            self.apply_challenge(
                str(message["host"]), str(message["token"]), None if answer is None else str(answer)
            )
            return None
        if op == "subscribe":
            self.subscribers.add(channel)
            self._in_flight.setdefault(channel, {})
            return {
                "snapshot": snapshot_to_json(self.snapshot),
                "certificates": [certificate_to_json(c) for c in self.certificates],
                "challenges": [[h, t, a] for (h, t), a in self.challenges.items()],
            }
        if op == "ping":
            return {"pid": os.getpid(), "snapshots": self.snapshots_received}
        raise InvalidInput(f"unknown data plane request {op!r}")

    # -- logs -------------------------------------------------------------------------------------

    def relay_logs(self) -> None:
        """Hand the waiting log lines to the attached control plane (they wait while none is)."""
        self._relay_soon = False
        control = self.control
        if control is None or control.closed:
            return
        lines = self.relay.drain()
        if lines:
            control.send({"op": "logs", "lines": lines_to_json(lines)})

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(RELAY_INTERVAL)
            try:
                self.relay_logs()
            except Exception:
                log.exception("relaying log lines failed")

    # -- router workers' traffic ----------------------------------------------------------------

    def _activity(self, channel: Channel, counts: dict[str, list[int]]) -> None:
        outstanding = self._in_flight.setdefault(channel, {})
        runtime = self.runtime
        for did, (started, finished) in counts.items():
            for _ in range(started):
                runtime.request_started(did)
            for _ in range(finished):
                runtime.request_finished(did)
            left = outstanding.get(did, 0) + started - finished
            if left > 0:
                outstanding[did] = left
            else:
                outstanding.pop(did, None)

    def _release_in_flight(self, channel: Channel) -> None:
        for did, left in self._in_flight.pop(channel, {}).items():
            for _ in range(left):
                self.runtime.request_finished(did)

    async def _watch(self) -> None:
        """Tell router workers at once when an upstream they were given stops serving."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for did, upstream in list(self._given.items()):
                if self.runtime.running_upstream(did) == upstream:
                    continue
                del self._given[did]
                message = {"op": "gone", "deployment_id": did}
                for channel in list(self.subscribers):
                    with contextlib.suppress(Exception):
                        channel.send(message)
