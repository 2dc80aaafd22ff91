"""Fixtures and helpers of the dashboard tests: the real platform in a subprocess (router,
runtime, builder, API and dashboard on one port; SQLite in a temp data dir) and a headless
Chromium from Debian driven by Playwright."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from platformkit import Platform, tar_gz

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


class Server(Platform):
    """The platform as the dashboard tests use it: the API client speaks from the root."""

    @property
    def api_url(self) -> str:
        return self.url

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30.0
        )

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, follow_redirects=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        # one build at a time: a second deployment waits queued, so its page opens before it
        # builds
        "PHEMERAL_BUILD_CONCURRENCY": "1",
        "PHEMERAL_ALLOW_LOCAL_REPOS": "true",  # push deployments fetch from local repositories
    }
    platform = Server(
        tmp_path_factory.mktemp("dashboard") / "data",
        env=env,
        args=["--base-domain", "phemeral.localhost"],
    )
    try:
        yield platform.start()
    finally:
        platform.stop()


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
