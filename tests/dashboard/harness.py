"""Fixtures and helpers of the dashboard tests: the real platform in a subprocess (router,
runtime, builder, API and dashboard on one port; SQLite in a temp data dir) and a headless
Chromium from Debian driven by Playwright."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    port: int
    data_dir: Path
    token: str
    log: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """What people type: the base domain (``*.localhost`` resolves to 127.0.0.1)."""
        return f"http://phemeral.localhost:{self.port}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
        )

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30.0, follow_redirects=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_argv(data_dir: Path, port: int) -> list[str]:
    """`phemeral serve`: the platform on one port (router, runtime, builder, API, dashboard)."""
    return [
        sys.executable,
        "-m",
        "phemeral",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-domain",
        "phemeral.localhost",
    ]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("dashboard-data")
    log = data_dir.parent / "dashboard-server.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHEMERAL_")}
    # one build at a time: a second deployment waits queued, so its page opens before it builds
    env["PHEMERAL_BUILD_CONCURRENCY"] = "1"
    env["PHEMERAL_ALLOW_LOCAL_REPOS"] = "true"  # push deployments fetch from local repositories
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _serve_argv(data_dir, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phemeral serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phemeral serve did not answer in 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        token = (data_dir / "admin-token").read_text().strip()
        yield Server(port=port, data_dir=data_dir, token=token, log=log)
    finally:
        # Ctrl-C, as a person stops it: the server stops its app instances on the way out
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tar_gz(files: dict[str, str]) -> bytes:
    """A source archive as `phemeral deploy` uploads it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_dir(root: Path) -> bytes:
    files = {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts
    }
    return tar_gz(files)


def upload(
    api: httpx.Client,
    project: str,
    archive: bytes,
    *,
    environment: str = "production",
    promote: bool = True,
) -> dict[str, object]:
    response = api.post(
        f"/api/projects/{project}/deployments",
        files={"archive": ("source.tar.gz", archive, "application/gzip")},
        data={
            "environment": environment,
            "promote": "true" if promote else "false",
            "create_project": "true",
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def wait_finished(api: httpx.Client, deployment_id: str, timeout: float = 240) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, object] = api.get(f"/api/deployments/{deployment_id}").json()
        if body["status"] != "building":
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"deployment {deployment_id} still building after {timeout} s")
        time.sleep(0.3)


def sign_in(client: httpx.Client, token: str, next_path: str = "/projects") -> httpx.Response:
    """Sign in the way a browser does: load the form (CSRF cookie + field), post it back."""
    form = client.get("/login", params={"next": next_path})
    assert form.status_code == 200
    return client.post(
        "/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": next_path},
    )


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@pytest.fixture(scope="module")  # sync Playwright keeps an event loop running until it stops
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian (not a downloaded build), driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/bootstrap --dev (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
