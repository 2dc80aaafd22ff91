"""The data plane survives the control plane: real `phemeral serve`, two running apps, steady load.

The server runs two router processes (``SO_REUSEPORT``), so requests also go through a router
worker that reaches the runtime over the data plane socket. Loopback only, bounded in time.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .serverkit import FASTAPI_APP, Server, unique, upload, wait_done

pytestmark = pytest.mark.slow

BASE = "phemeral.localhost"


class SteadyLoad:
    """Threads sending GETs (a new connection each, so both routers get them) until stopped."""

    def __init__(self, port: int, hosts: list[str], per_host: int = 2, pause: float = 0.01):
        self.port = port
        self.pause = pause
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(host,), daemon=True)
            for host in hosts
            for _ in range(per_host)
        ]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, host: str) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
                response = conn.getresponse()
                body = response.read()
                outcome = None if response.status == 200 else f"{host}: {response.status} {body!r}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{host}: {type(exc).__name__}: {exc}"
            finally:
                conn.close()
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)
            self._stop.wait(self.pause)


def children(pid: int) -> dict[int, bytes]:
    try:
        pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return {}
    out = {}
    for child in pids:
        try:
            out[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
    return out


def child_pid(server: Server, role: bytes) -> int | None:
    assert server.proc is not None
    for pid, cmdline in children(server.proc.pid).items():
        if b"phemeral.dataplane.child\x00" + role in cmdline:
            return pid
    return None


def wait_for(check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout:g} s: {check}")


def api_answers(server: Server) -> bool:
    try:
        return httpx.get(server.url + "/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def get(server: Server, host: str) -> httpx.Response:
    return httpx.get(server.url + "/", headers={"Host": host}, timeout=60)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[str]]]:
    data_dir = tmp_path_factory.mktemp("failover") / "data"
    data_dir.mkdir()
    server = Server(
        data_dir=data_dir, database_url=None, extra_env={"PHEMERAL_ROUTER_PROCESSES": "2"}
    ).start()
    try:
        hosts = []
        with server.client() as api:
            for _ in range(2):
                name = unique("fo")
                assert api.post("/projects", json={"name": name}).status_code == 201
                deployment = upload(api, name, FASTAPI_APP)
                assert wait_done(api, str(deployment["id"]))["status"] == "successful"
                hosts.append(f"{name}-production.{BASE}")
        for host in hosts:
            assert get(server, host).json() == {"ok": True}
        yield server, hosts
    finally:
        server.kill()


def test_kill_9_of_the_control_plane_under_load_fails_no_request(
    platform: tuple[Server, list[str]],
) -> None:
    server, hosts = platform
    old = child_pid(server, b"control")
    assert old is not None and child_pid(server, b"router") is not None
    with SteadyLoad(server.port, hosts) as load:
        time.sleep(1.0)
        server_pid = server.proc.pid if server.proc else None
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: child_pid(server, b"control") not in (None, old) and api_answers(server))
        time.sleep(1.0)
    assert load.failures == []
    assert load.ok > 50
    assert server.proc is not None and server.proc.pid == server_pid and server.proc.poll() is None
    with server.client() as api:  # the new control plane sees the apps the data plane kept
        for host in hosts:
            listed = api.get(f"/projects/{host.split('-production')[0]}/deployments").json()
            assert listed["items"][0]["instances"]["state"] == "running"


def test_a_router_worker_killed_comes_back(platform: tuple[Server, list[str]]) -> None:
    server, hosts = platform
    old = child_pid(server, b"router")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: child_pid(server, b"router") not in (None, old))
    for _ in range(20):  # new connections, spread over both routers again
        for host in hosts:
            assert get(server, host).json() == {"ok": True}


def test_full_restart_serves_from_the_saved_table_without_a_control_plane(
    platform: tuple[Server, list[str]],
) -> None:
    server, hosts = platform
    assert (server.data_dir / "routing.json").exists()
    token = server.data_dir / "admin-token"
    saved = token.read_bytes()
    server.kill()
    # A control plane that cannot start (its admin-token path is a directory): whatever
    # answers now comes from the data plane's own records.
    token.unlink()
    token.mkdir()
    try:
        server.proc = None
        server_start_without_api(server)
        for host in hosts:
            assert get(server, host).json() == {"ok": True}
        assert httpx.get(server.url + "/api/health", timeout=5).status_code == 502
    finally:
        shutil.rmtree(token)
        token.write_bytes(saved)
        token.chmod(0o600)
    wait_for(lambda: api_answers(server))
    with server.client() as api:
        assert api.get("/projects").status_code == 200


def test_an_upgrade_takes_the_port_over_without_failing_a_request(
    platform: tuple[Server, list[str]],
) -> None:
    server, hosts = platform
    wait_for(lambda: api_answers(server))
    old = server.proc
    assert old is not None and old.poll() is None
    runs_dir = server.data_dir / "runtime" / "runs"
    old_runs = {p.name for p in runs_dir.iterdir()}
    with SteadyLoad(server.port, hosts) as load:
        time.sleep(0.5)
        # A second `phemeral serve` on the same data dir and port: it takes the socket over,
        # starts the apps that run, routes, then the old one drains and stops.
        server_start_without_api(server)
        assert old.wait(timeout=120) == 0
        time.sleep(0.5)
    assert load.failures == []
    assert load.ok > 50
    assert server.proc is not None and server.proc.poll() is None
    wait_for(lambda: api_answers(server))
    for host in hosts:
        assert get(server, host).json() == {"ok": True}
    # The old run's processes, mounts and folder are gone; only the new run is left.
    wait_for(lambda: {p.name for p in runs_dir.iterdir()} & old_runs == set())
    assert len(list(runs_dir.iterdir())) == 1


def server_start_without_api(server: Server) -> None:
    """`Server.start` waits for the API; here only the router is expected to come up."""
    args = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(server.data_dir)]
    args += ["--port", str(server.port)]
    env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning", **server.extra_env}
    log = (server.data_dir.parent / f"server-{server.port}.log").open("ab")
    server.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)

    def router_answers() -> bool:
        try:
            httpx.get(server.url + "/", headers={"Host": "nothing." + BASE}, timeout=2)
            return True
        except httpx.HTTPError:
            return False

    wait_for(router_answers, timeout=60)
