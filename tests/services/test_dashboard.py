"""The environment page lists an environment's services and manages them through forms."""

from __future__ import annotations

import html
from pathlib import Path

import httpx
import pytest

from .kit import Server, unique

pytestmark = [pytest.mark.slow, pytest.mark.root]


def csrf_of(page: str) -> str:
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_environment_page_creates_backs_up_rotates_and_deletes(
    server: Server, api: httpx.Client
) -> None:
    project = unique("dash")
    api.post("/projects", json={"name": project})
    browser = httpx.Client(base_url=server.url, timeout=60)
    form = browser.get("/login", params={"next": "/projects"})
    signed = browser.post(
        "/login",
        data={"token": server.token, "csrf_token": csrf_of(form.text), "next": "/projects"},
    )
    assert signed.status_code == 303
    env_page = f"/projects/{project}/environments/production"
    page = browser.get(env_page)
    assert "No backing services" in page.text

    made = browser.post(
        f"{env_page}/services", data={"kind": "redis", "name": "", "csrf_token": csrf_of(page.text)}
    )
    assert made.status_code == 200, made.text
    name = f"{project}-production-redis"
    assert f"Created redis service {name}" in made.text and "REDIS_URL" in made.text
    assert api.get(f"/services/{name}").status_code == 200

    clash = browser.post(
        f"{env_page}/services",
        data={"kind": "redis", "name": name, "csrf_token": csrf_of(page.text)},
    )
    assert clash.status_code == 409 and "already exists" in html.unescape(clash.text)

    backed = browser.post(f"/services/{name}/backup", data={"csrf_token": csrf_of(page.text)})
    assert f"Backed up {name}" in backed.text
    before = api.get(f"/services/{name}", params={"reveal": "true"}).json()["credentials"]
    rotated = browser.post(f"/services/{name}/rotate", data={"csrf_token": csrf_of(page.text)})
    assert "New credentials" in rotated.text
    after = api.get(f"/services/{name}", params={"reveal": "true"}).json()["credentials"]
    assert after != before

    forged = browser.post(f"/services/{name}/delete", data={"csrf_token": "forged"})
    assert forged.status_code in (400, 403) and api.get(f"/services/{name}").status_code == 200
    confirm = browser.get(f"/services/{name}/delete")
    assert "final backup" in confirm.text
    deleted = browser.post(f"/services/{name}/delete", data={"csrf_token": csrf_of(confirm.text)})
    assert f"Deleted {name}" in deleted.text
    path = html.unescape(deleted.text).split("its final backup is ")[1].split(".rdb")[0] + ".rdb"
    assert Path(path).is_file()
    assert api.get(f"/services/{name}").status_code == 404
