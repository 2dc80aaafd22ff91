"""Network namespaces: addresses, the allow-list through the gateway, clean-up and reclaiming."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from phemeral import network
from phemeral.errors import ConfigError
from phemeral.models import Endpoint


def test_slots_names_and_addresses() -> None:
    assert network.GATEWAY == "10.213.0.1"
    assert network.slot_addresses(1) == ("10.213.0.5", "10.213.0.6")
    assert network.slot_addresses(network.SLOTS - 1)[1] == "10.213.255.254"
    assert all(len(n) <= 15 for n in network.slot_names(network.SLOTS - 1))
    with pytest.raises(ValueError):
        network.slot_addresses(0)  # the gateway's


def test_resolvers_and_endpoints() -> None:
    text = "# x\nnameserver 10.255.255.53\nnameserver ::1\nnameserver 10.255.255.53\nsearch a\n"
    assert network.resolvers(text) == ["10.255.255.53"]
    assert network.check_endpoints([Endpoint("10.213.0.1", 5433)] * 2) == (
        Endpoint("10.213.0.1", 5433),
    )
    with pytest.raises(ConfigError):
        network.check_endpoints([Endpoint("db.example", 5432)])
    with pytest.raises(ConfigError):
        network.check_endpoints([Endpoint("10.213.0.1", 0)])


def test_the_ruleset_denies_by_default_and_admits_dns_and_the_allow_list() -> None:
    rules = network.host_ruleset("phemeral_t", ["10.255.255.53"], ["192.0.2.0/24"])
    forward = rules.split("chain forward")[1].split("chain output")[0]
    order = [
        forward.index("@allow accept"),
        forward.index("th dport 53 accept"),
        forward.index("ip daddr @denied"),
        forward.rindex("accept"),
    ]
    assert order == sorted(order)
    assert "192.0.2.0/24" in rules and "10.0.0.0/8" in rules and "169.254.0.0/16" in rules
    assert "meta nfproto ipv6 reject" in forward
    assert "meta skuid != 0" in rules.split("chain output")[1]
    assert "masquerade" in rules


def test_owners_are_alive_only_while_their_process_runs() -> None:
    me = network.Networks("x").owner
    assert network.owner_alive(me)
    digest, pid, start = me.split("_")
    assert not network.owner_alive(f"{digest}_{pid}_{int(start) + 1}")  # a reused pid
    assert not network.owner_alive("garbage")


def _in_ns(ns: network.Netns, host: str, port: int) -> str:
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=2); print('open')\n"
        "except OSError as e:\n"
        "    print('denied', e)\n"
    )
    argv = ["nsenter", f"--net={ns.path}", "setpriv", "--reuid=65534", "--regid=65534"]
    argv += ["--clear-groups", sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture
def networks() -> Iterator[network.Networks]:
    if network.unavailable_reason() is not None:
        pytest.fail(f"network namespaces unavailable: {network.unavailable_reason()}")
    nets = network.Networks(f"/tmp/test-network-{uuid.uuid4().hex}")
    nets.start()
    yield nets
    nets.close()


@pytest.fixture
def service() -> Iterator[list[int]]:
    """Two listeners on the gateway address, as backing services bind."""
    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind((network.GATEWAY, 0))
        sock.listen(16)
        socks.append(sock)
    stop = threading.Event()

    def accept(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                sock.accept()[0].close()

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in socks]
    for thread in threads:
        thread.start()
    yield [s.getsockname()[1] for s in socks]
    stop.set()
    for sock in socks:
        sock.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_only_the_listed_endpoints_of_the_gateway_are_reachable(
    networks: network.Networks, service: list[int]
) -> None:
    allowed, other = service
    mine = networks.create([Endpoint(network.GATEWAY, allowed)])
    theirs = networks.create()
    try:
        assert _in_ns(mine, network.GATEWAY, allowed) == "open"
        assert _in_ns(mine, network.GATEWAY, other).startswith("denied")
        assert _in_ns(theirs, network.GATEWAY, allowed).startswith("denied")
        # the other namespace cannot reach this one's address either
        assert _in_ns(theirs, mine.address, 22).startswith("denied")
        theirs = networks.set_allow(theirs, [Endpoint(network.GATEWAY, other)])
        assert _in_ns(theirs, network.GATEWAY, other) == "open"
        assert _in_ns(theirs, network.GATEWAY, allowed).startswith("denied")
    finally:
        networks.remove(mine)
        networks.remove(theirs)
    assert not mine.path.exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f" {mine.veth}@" not in links and f" {theirs.veth}@" not in links


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_close_removes_everything_and_a_restart_reclaims_a_dead_owners_leftovers() -> None:
    if network.unavailable_reason() is not None:
        pytest.fail(f"network namespaces unavailable: {network.unavailable_reason()}")
    nets = network.Networks(f"/tmp/test-network-{uuid.uuid4().hex}")
    kept = nets.create()
    nets.close()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert nets.table not in tables
    assert not kept.path.exists()
    assert not (network.STATE_DIR / "slots" / str(kept.slot)).exists()

    # A platform that died: its slot file, namespace, veth and table are left behind.
    crashed = network.Networks(f"/tmp/test-network-{uuid.uuid4().hex}")
    left = crashed.create()
    dead = "0badc0de_1_1"  # no such process
    (network.STATE_DIR / "slots" / str(left.slot)).write_text(dead + "\n")
    subprocess.run(["nft", "add", "table", "inet", network.TABLE_PREFIX + dead], check=True)
    fresh = network.Networks(f"/tmp/test-network-{uuid.uuid4().hex}")
    fresh.start()
    try:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert network.TABLE_PREFIX + dead not in tables
        assert not left.path.exists()
        assert not (network.STATE_DIR / "slots" / str(left.slot)).exists()
        assert not Path(f"/sys/class/net/{left.veth}").exists()
    finally:
        fresh.close()
        crashed.close()
