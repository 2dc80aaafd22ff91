"""Attacks from inside a deployed app and from a build's setup.py, against a real platform.

One `phemeral serve` (root, network namespaces on) deploys a victim (a custom command bound to
127.0.0.1:$PORT inside its namespace) and an attacker whose ``setup.py`` runs the attacks while
its package installs and whose app runs them again on request (`probes.py`). Each test asserts
a denial (issue #11): the host's loopback listeners (PostgreSQL 5432, Redis 6379 and every
other), the victim's port, the listener table, 0.0.0.0, user namespaces, mount; and that what is
allowed (DNS, the package index) still works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from phemeral import network

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the platform isolates tenants as root"),
]

HERE = Path(__file__).resolve().parent
BASE = "phemeral.localhost"
INDEX_HOST = "pypi.org"
HOST_SERVICES = (5432, 6379)  # the machine's PostgreSQL and Redis on 127.0.0.1

APP = """\
import json, os, socket, threading, time
from pathlib import Path
from flask import Flask, request
import probes

app = Flask(__name__)
TARGETS = json.loads(Path(__file__).with_name("targets.json").read_text())
held = {"port": None, "accepted": 0}

@app.get("/")
def index():
    return "attacker"

@app.get("/probe")
def probe():
    return probes.run(TARGETS, INDEX_HOST)

@app.get("/address")
def address():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("192.0.2.200", 9))  # no packet is sent: only the route is looked up
    return {"address": probe.getsockname()[0]}

@app.post("/hold")
def hold():
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    sock.settimeout(1)
    held["port"] = sock.getsockname()[1]
    def accept():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn, _ = sock.accept()
                held["accepted"] += 1
                conn.close()
            except OSError:
                pass
        sock.close()
    threading.Thread(target=accept, daemon=True).start()
    return held

@app.get("/held")
def held_state():
    return held
""".replace("INDEX_HOST", repr(INDEX_HOST))

SETUP = """\
import json, sys
from pathlib import Path
here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
import probes
targets = json.loads((here / "targets.json").read_text())
(here / "build_probe.json").write_text(json.dumps(probes.run(targets, INDEX_HOST)))
from setuptools import setup
setup(name="attacker-build-hook", version="0.1", py_modules=[])
""".replace("INDEX_HOST", repr(INDEX_HOST))


@dataclass
class Platform:
    url: str
    port: int
    data_dir: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "phemeral", *args, "--url", self.url],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "PHEMERAL_DATA_DIR": str(self.data_dir)},
        )

    def deploy(self, path: Path, project: str) -> dict[str, Any]:
        result = self.cli("deploy", str(path), "--project", project, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        body: dict[str, Any] = json.loads(result.stdout)
        assert body["status"] == "successful", body
        return body

    def get(self, deployment_id: str, path: str, method: str = "GET") -> httpx.Response:
        return httpx.request(
            method,
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Host": f"{deployment_id}.{BASE}"},
            timeout=120,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_listeners() -> set[tuple[str, int]]:
    """Listening TCP sockets of the host's own namespace: (address, port)."""
    found: set[tuple[str, int]] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":
            continue
        addr, port = fields[1].split(":")
        ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
        found.add((ip, int(port, 16)))
    return found


def host_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("192.0.2.200", 9))
    address = str(probe.getsockname()[0])
    probe.close()
    return address


def digest(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def own_namespaces(data_dir: Path) -> list[tuple[str, str]]:
    """(netns name, address) of every namespace of the platform serving ``data_dir``."""
    found = []
    slots = network.STATE_DIR / "slots"
    for path in slots.iterdir() if slots.exists() else []:
        if path.name.isdigit() and path.read_text().startswith(digest(data_dir) + "_"):
            name, _ = network.slot_names(int(path.name))
            found.append((name, network.slot_addresses(int(path.name))[1]))
    return found


def ns_listeners(name: str) -> set[int]:
    out = subprocess.run(
        ["ip", "netns", "exec", name, "cat", "/proc/net/tcp"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        int(f.split()[1].split(":")[1], 16) for f in out.splitlines()[1:] if f.split()[3] == "0A"
    }


@dataclass
class Attack:
    platform: Platform
    victim: dict[str, Any]
    victim_target: tuple[str, int]
    attacker: dict[str, Any]
    targets: list[tuple[str, int]]
    from_app: dict[str, Any]
    from_build: dict[str, Any]

    def result(self, where: str) -> dict[str, Any]:
        return self.from_app if where == "app" else self.from_build


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    if network.unavailable_reason() is not None:
        pytest.fail(f"network namespaces unavailable: {network.unavailable_reason()}")
    tmp = tmp_path_factory.mktemp("security")
    data_dir = tmp / "data"
    data_dir.mkdir()
    port = _free_port()
    log = (tmp / "serve.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phemeral",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PHEMERAL_LOG_LEVEL": "warning", "PHEMERAL_NETWORK": "isolated"},
    )
    platform = Platform(f"http://127.0.0.1:{port}", port, data_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            try:
                if httpx.get(platform.url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            assert time.monotonic() < deadline, "phemeral serve did not start"
        before = set(own_namespaces(data_dir))

        # The victim: a custom command listening on 127.0.0.1:$PORT in its own namespace.
        victim_dir = tmp / "victim"
        victim_dir.mkdir()
        (victim_dir / "requirements.txt").write_text("flask\n")
        (victim_dir / "index.html").write_text("victim's page\n")
        (victim_dir / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
        created = platform.cli(
            "projects",
            "create",
            "victim",
            "--start-command",
            "exec python -m http.server $PORT --bind 127.0.0.1",
        )
        assert created.returncode == 0, created.stdout + created.stderr
        victim = platform.deploy(victim_dir, "victim")
        assert "victim's page" in platform.get(victim["id"], "/index.html").text
        new = [ns for ns in own_namespaces(data_dir) if ns not in before]
        victim_ns = [(name, addr) for name, addr in new if ns_listeners(name)]
        assert len(victim_ns) == 1, new
        victim_port = sorted(ns_listeners(victim_ns[0][0]))[0]
        victim_target = (victim_ns[0][1], victim_port)

        # Every listener of the host, by every address a sandbox might try.
        gateway, me = network.GATEWAY, host_address()
        targets = {victim_target}
        for addr, lport in host_listeners():
            if addr in ("127.0.0.1", "0.0.0.0"):
                targets |= {("127.0.0.1", lport), (me, lport), (gateway, lport)}
        for lport in HOST_SERVICES:
            targets |= {("127.0.0.1", lport), (gateway, lport), (me, lport)}

        attacker_dir = tmp / "attacker"
        attacker_dir.mkdir()
        shutil.copy(HERE / "probes.py", attacker_dir / "probes.py")
        (attacker_dir / "targets.json").write_text(json.dumps(sorted(targets)))
        (attacker_dir / "app.py").write_text(APP)
        (attacker_dir / "setup.py").write_text(SETUP)
        (attacker_dir / "requirements.txt").write_text("flask\ngunicorn\n.\n")
        attacker = platform.deploy(attacker_dir, "attacker")
        built = list(data_dir.glob(f"apps/*/releases/{attacker['id']}/src/build_probe.json"))
        assert len(built) == 1, "the build hook did not run"
        from_build = json.loads(built[0].read_text())
        response = platform.get(attacker["id"], "/probe")
        assert response.status_code == 200, response.text
        results = {"targets": sorted(targets), "app": response.json(), "build": from_build}
        (tmp / "results.json").write_text(json.dumps(results, indent=1))  # for a reader
        yield Attack(
            platform,
            victim,
            victim_target,
            attacker,
            sorted(targets),
            response.json(),
            from_build,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The platform stopped: nothing of its network is left.
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"{network.TABLE_PREFIX}{digest(data_dir)}_" not in tables
    assert own_namespaces(data_dir) == []


WHERE = ["app", "build"]


@pytest.mark.parametrize("where", WHERE)
def test_host_loopback_services_are_unreachable(attack: Attack, where: str) -> None:
    seen = attack.result(where)["connect"]
    for lport in HOST_SERVICES:  # PostgreSQL and Redis answer on the host...
        with socket.create_connection(("127.0.0.1", lport), timeout=2):
            pass
        # ...but not to a tenant, by any address
        for host in ("127.0.0.1", network.GATEWAY, host_address()):
            assert seen[f"{host}:{lport}"].startswith("denied"), (host, lport, seen)


@pytest.mark.parametrize("where", WHERE)
def test_every_host_listener_is_unreachable(attack: Attack, where: str) -> None:
    seen = attack.result(where)["connect"]
    assert len(seen) == len(attack.targets) >= 3 * len(HOST_SERVICES)
    opened = {target: outcome for target, outcome in seen.items() if outcome == "open"}
    assert opened == {}


@pytest.mark.parametrize("where", WHERE)
def test_another_apps_port_is_unreachable(attack: Attack, where: str) -> None:
    host, vport = attack.victim_target
    # The platform (root, on the host) reaches the victim there: the port is real...
    with socket.create_connection((host, vport), timeout=2):
        pass
    # ...and the attacker does not.
    assert attack.result(where)["connect"][f"{host}:{vport}"].startswith("denied")


@pytest.mark.parametrize("where", WHERE)
def test_the_listener_table_shows_nothing_of_others(attack: Attack, where: str) -> None:
    seen = {int(entry.rsplit(":", 1)[1]) for entry in attack.result(where)["listeners"]}
    others = {lport for _addr, lport in host_listeners()} | {attack.victim_target[1]}
    assert set(HOST_SERVICES) <= others
    assert not (seen & (set(HOST_SERVICES) | {attack.victim_target[1], attack.platform.port}))


@pytest.mark.parametrize("where", WHERE)
def test_user_namespaces_and_mounts_are_refused(attack: Attack, where: str) -> None:
    calls = attack.result(where)["syscalls"]
    assert calls["unshare_user"] == "EPERM"
    assert calls["unshare_net"] == "EPERM"
    assert calls["mount_tmpfs"] == "EPERM"
    assert calls["unshare_cmd"].startswith("exit 1") and "not permitted" in calls["unshare_cmd"]
    assert attack.result(where)["uid"] != 0


@pytest.mark.parametrize("where", WHERE)
def test_dns_and_the_package_index_stay_reachable(attack: Attack, where: str) -> None:
    egress = attack.result(where)["egress"]
    expected = socket.getaddrinfo(INDEX_HOST, 443, socket.AF_INET)[0][4][0]
    assert egress["dns"] == expected
    assert egress["connect"] == "open"


def test_binding_0_0_0_0_in_a_build_is_invisible_to_the_host(attack: Attack) -> None:
    bound = attack.from_build["bind"]
    assert bound["bound"] is True
    assert ("0.0.0.0", bound["port"]) not in host_listeners()


def test_a_port_an_app_binds_on_0_0_0_0_reaches_nothing(attack: Attack) -> None:
    platform, did = attack.platform, attack.attacker["id"]
    held = platform.get(did, "/hold", method="POST").json()
    hport = held["port"]
    address = platform.get(did, "/address").json()["address"]
    assert address.startswith("10.213.")
    assert ("0.0.0.0", hport) not in host_listeners()
    # Not on the host's addresses,
    for host in ("127.0.0.1", host_address()):
        with pytest.raises(OSError):
            socket.create_connection((host, hport), timeout=2).close()
    # not at its own address for anyone on the host but the platform (root),
    nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        sys.executable,
        "-c",
        f"import socket; socket.create_connection(({address!r}, {hport}), timeout=2)",
    ]
    denied = subprocess.run(nobody, capture_output=True, text=True, timeout=30, check=False)
    assert denied.returncode != 0 and "refused" in denied.stderr.lower(), denied.stderr
    # and not from another tenant's namespace.
    victim_ns = next(
        n for n, a in own_namespaces(platform.data_dir) if a == attack.victim_target[0]
    )
    across = subprocess.run(
        ["ip", "netns", "exec", victim_ns, *nobody],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert across.returncode != 0, across.stdout
    assert platform.get(did, "/held").json()["accepted"] == 0
