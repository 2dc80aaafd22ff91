"""HTTPS end to end: `phemeral serve` with real ACME issuance from pebble (Debian's package).

pebble validates HTTP-01 on the router's plain port, with `pebble-challtestsrv` as its DNS
(every name → 127.0.0.1). Certificates are checked against pebble's own root (from its
management API), so what is verified is what a browser would verify.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from router.certkit import new_ca

from .serverkit import FASTAPI_APP, Server, free_port, unique, upload, wait_done

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("pebble") is None, reason="pebble: scripts/bootstrap --dev"),
]


@dataclass
class Pebble:
    """pebble + pebble-challtestsrv on free ports; ``stop``/``start`` simulate a CA outage."""

    workdir: Path
    http_port: int
    listen: int = 0
    management: int = 0
    dns: int = 0
    proc: subprocess.Popen[bytes] | None = None
    dns_proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.listen, self.management, self.dns = free_port(), free_port(), free_port()
        ca = new_ca("pebble test listener CA")
        self.ca_bundle = self.workdir / "pebble-listener-ca.pem"
        self.ca_bundle.write_bytes(ca.pem)
        leaf = ca.issue("localhost", "127.0.0.1")
        (self.workdir / "pebble-cert.pem").write_bytes(leaf.chain_pem)
        (self.workdir / "pebble-key.pem").write_bytes(leaf.key_pem)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.listen}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(self.workdir / "pebble-cert.pem"),
                "privateKey": str(self.workdir / "pebble-key.pem"),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.workdir / "pebble.json").write_text(json.dumps(config))

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.listen}/dir"

    def start_dns(self) -> None:
        log = (self.workdir / "challtestsrv.log").open("ab")
        self.dns_proc = subprocess.Popen(
            [
                "pebble-challtestsrv",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
                "-dns01", f"127.0.0.1:{self.dns}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"127.0.0.1:{free_port()}",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip

    def start(self) -> None:
        log = (self.workdir / "pebble.log").open("ab")
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(self.workdir / "pebble.json"), "-dnsserver",
             f"127.0.0.1:{self.dns}"],
            stdout=log,
            stderr=log,
            env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.directory, verify=self.trust(), timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("pebble did not start")

    def stop(self) -> None:
        for proc in (self.proc,):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.dns_proc is not None and self.dns_proc.poll() is None:
            self.dns_proc.terminate()
            self.dns_proc.wait(10)

    def roots(self) -> str:
        """pebble's issuing root (made anew each time pebble starts)."""
        url = f"https://127.0.0.1:{self.management}/roots/0"
        return httpx.get(url, verify=self.trust(), timeout=5).text

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))


@dataclass
class Platform:
    server: Server
    pebble: Pebble
    api: httpx.Client
    https_port: int
    project: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("https")
    port, https_port = free_port(), free_port()
    pebble = Pebble(workdir, http_port=port)
    pebble.start_dns()
    pebble.start()
    server = Server(
        data_dir=workdir / "data",
        database_url=None,
        port=port,
        extra_args=[
            "--https-port", str(https_port),
            "--acme-directory", pebble.directory,
            "--acme-ca-bundle", str(pebble.ca_bundle),
            "--acme-email", "ops@example.test",
        ],
        extra_env={"PHEMERAL_ACME_RETRY_SECONDS": "1"},
    )  # fmt: skip
    try:
        server.start()
        with server.client() as api:
            project = unique("tls")
            deployment = upload(api, project, FASTAPI_APP, create_project="true")
            assert wait_done(api, str(deployment["id"]))["status"] == "successful"
            yield Platform(server, pebble, api, https_port, project)
    finally:
        server.kill()
        pebble.close()


def wait_certificate(api: httpx.Client, name: str, check, timeout: float = 90) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        domain = api.get(f"/domains/{name}").json()
        if check(domain["certificate"]):
            return domain
        time.sleep(0.3)
    raise AssertionError(f"certificate of {name} never got there: {domain['certificate']}")


class TlsConnection:
    """One keep-alive HTTPS connection to the router, verified against pebble's root."""

    def __init__(self, port: int, name: str, root_pem: str) -> None:
        ctx = ssl.create_default_context(cadata=root_pem)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=name)
        self.name = name

    @property
    def serial(self) -> int:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def get(self, path: str = "/") -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.name}\r\n\r\n".encode())
        response = http.client.HTTPResponse(self.sock)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read()

    def close(self) -> None:
        self.sock.close()


def cli(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phemeral", *args, "--url", platform.server.url,
         "--token", platform.server.token],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_attached_domain_gets_a_certificate_through_our_http01_responder(
    platform: Platform,
) -> None:
    added = cli(platform, "domains", "add", "app.example.test", "--project", platform.project)
    assert added.returncode == 0, added.stderr
    assert f"CNAME  {platform.project}-production." in added.stdout  # the DNS record to create
    domain = wait_certificate(platform.api, "app.example.test", lambda c: c["state"] == "valid")
    assert domain["certificate"]["last_error"] is None
    listed = cli(platform, "domains", "list", platform.project, "--json")
    items = json.loads(listed.stdout)["items"]
    assert [(d["name"], d["certificate"]["state"]) for d in items] == [
        ("app.example.test", "valid")
    ]
    log = (platform.pebble.workdir / "pebble.log").read_text()
    port = platform.server.port  # pebble fetched the token from our router's plain listener
    assert f"validate w/ HTTP: http://app.example.test:{port}/.well-known/acme-challenge/" in log
    assert "set VALID by completed challenge" in log

    conn = TlsConnection(platform.https_port, "app.example.test", platform.pebble.roots())
    status, body = conn.get("/")
    assert (status, json.loads(body)) == (200, {"ok": True})
    conn.close()
    # plain HTTP now redirects to HTTPS, keeping the path
    plain = httpx.get(
        f"http://127.0.0.1:{platform.server.port}/docs?x=1",
        headers={"Host": "app.example.test"},
    )
    assert plain.status_code == 308
    assert plain.headers["location"] == f"https://app.example.test:{platform.https_port}/docs?x=1"


def test_redirect_can_be_turned_off_and_hsts_on(platform: Platform) -> None:
    wait_certificate(platform.api, "app.example.test", lambda c: c["state"] == "valid")
    env = f"/projects/{platform.project}/environments/production"
    body = {"https_redirect": False, "hsts_max_age": 3600}
    assert platform.api.patch(env, json=body).status_code == 200
    plain = httpx.get(
        f"http://127.0.0.1:{platform.server.port}/", headers={"Host": "app.example.test"}
    )
    assert plain.status_code == 200 and "strict-transport-security" not in plain.headers
    conn = TlsConnection(platform.https_port, "app.example.test", platform.pebble.roots())
    conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
    response = http.client.HTTPResponse(conn.sock)  # type: ignore[arg-type]
    response.begin()
    assert response.getheader("strict-transport-security") == "max-age=3600"
    response.read()
    conn.close()
    assert platform.api.patch(env, json={"https_redirect": True, "hsts_max_age": 0}).is_success


def test_unattached_domain_gets_no_certificate(platform: Platform) -> None:
    # a request naming it over plain HTTP asks for nothing: there is no on-demand issuance
    plain = httpx.get(
        f"http://127.0.0.1:{platform.server.port}/", headers={"Host": "stranger.example.test"}
    )
    assert plain.status_code == 404
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        TlsConnection(platform.https_port, "stranger.example.test", platform.pebble.roots())
    time.sleep(1)
    assert platform.api.get("/domains/stranger.example.test").status_code == 404
    assert "stranger.example.test" not in (platform.pebble.workdir / "pebble.log").read_text()


def test_renewal_replaces_the_certificate_without_dropping_a_keepalive_connection(
    platform: Platform,
) -> None:
    before = wait_certificate(platform.api, "app.example.test", lambda c: c["state"] == "valid")
    root = platform.pebble.roots()
    old = TlsConnection(platform.https_port, "app.example.test", root)
    assert old.get("/")[0] == 200
    old_serial = old.serial
    assert platform.api.post("/domains/app.example.test/renew").is_success
    issued = before["certificate"]["issued_at"]
    wait_certificate(
        platform.api,
        "app.example.test",
        lambda c: c["state"] == "valid" and c["issued_at"] != issued,
    )
    new = TlsConnection(platform.https_port, "app.example.test", root)
    deadline = time.monotonic() + 10
    while new.serial == old_serial and time.monotonic() < deadline:  # published just after
        new.close()
        time.sleep(0.2)
        new = TlsConnection(platform.https_port, "app.example.test", root)
    assert new.serial != old_serial
    assert new.get("/")[0] == 200
    assert old.get("/") == (200, b'{"ok":true}')  # the same connection, still serving
    old.close()
    new.close()


def test_ca_outage_is_retried_and_then_issued(platform: Platform) -> None:
    root = platform.pebble.roots()  # the root of the certificates issued so far
    platform.pebble.stop()
    try:
        # a renewal that fails keeps the current certificate serving
        assert platform.api.post("/domains/app.example.test/renew").is_success
        failing = wait_certificate(
            platform.api, "app.example.test", lambda c: c["failures"] >= 1, timeout=60
        )
        assert failing["certificate"]["state"] == "renewal-failing"
        conn = TlsConnection(platform.https_port, "app.example.test", root)
        assert conn.get("/")[0] == 200
        conn.close()
        added = platform.api.post(
            "/domains", json={"name": "late.example.test", "project": platform.project}
        )
        assert added.status_code == 201, added.text
        failed = wait_certificate(
            platform.api, "late.example.test", lambda c: c["failures"] >= 2, timeout=60
        )
        cert = failed["certificate"]
        assert cert["state"] == "failed"
        assert "cannot reach the CA" in cert["last_error"]
        assert cert["next_try_at"] is not None
        shown = cli(platform, "domains", "show", "late.example.test")
        assert "last error: cannot reach the CA" in shown.stdout
        assert "next try: " in shown.stdout
    finally:
        platform.pebble.start()
    wait_certificate(platform.api, "late.example.test", lambda c: c["state"] == "valid")
    wait_certificate(platform.api, "app.example.test", lambda c: c["state"] == "valid")
    conn = TlsConnection(platform.https_port, "late.example.test", platform.pebble.roots())
    assert conn.get("/")[0] == 200
    conn.close()
    # detached: no longer routed, no longer served
    assert cli(platform, "domains", "remove", "late.example.test").returncode == 0
    time.sleep(0.5)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        TlsConnection(platform.https_port, "late.example.test", platform.pebble.roots())
