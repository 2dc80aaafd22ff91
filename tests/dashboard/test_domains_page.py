"""Custom domains and HTTPS settings on an environment's page, through the real API."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .harness import Server, csrf_of, sign_in

pytestmark = pytest.mark.slow


@pytest.fixture
def browser_like(server: Server) -> httpx.Client:
    client = server.anonymous()
    assert sign_in(client, server.token).status_code == 303
    return client


def test_attach_renew_detach_and_https_settings(server: Server, browser_like: httpx.Client) -> None:
    project = f"dom-{uuid.uuid4().hex[:6]}"
    with server.api() as api:
        assert api.post("/api/projects", json={"name": project}).status_code == 201
    env_page = f"/projects/{project}/environments/production"
    page = browser_like.get(env_page)
    assert "No custom domains" in page.text
    attached = browser_like.post(
        f"{env_page}/domains", data={"csrf_token": csrf_of(page.text), "domain": "Shop.Example.org"}
    )
    assert attached.status_code == 200
    assert f"CNAME {project}-production." in attached.text  # the DNS record to create
    assert 'class="mono">shop.example.org<br>' in attached.text
    assert 'class="cert-pending">pending' in attached.text
    with server.api() as api:
        listed = api.get("/api/domains", params={"project": project}).json()["items"]
        assert [(d["name"], d["environment"]) for d in listed] == [
            ("shop.example.org", "production")
        ]
    # one environment per domain: attaching it again is refused, on the same page
    again = browser_like.post(
        f"{env_page}/domains", data={"csrf_token": csrf_of(page.text), "domain": "shop.example.org"}
    )
    assert again.status_code == 409 and "already attached" in again.text
    renewed = browser_like.post(
        "/domains/shop.example.org/renew", data={"csrf_token": csrf_of(page.text)}
    )
    assert "Renewal of shop.example.org requested" in renewed.text
    saved = browser_like.post(
        f"{env_page}/https",
        data={"csrf_token": csrf_of(page.text), "hsts_max_age": "600"},  # box unticked: off
    )
    assert "HTTPS settings saved." in saved.text
    with server.api() as api:
        env = api.get(f"/api/projects/{project}/environments").json()["items"][0]
        assert (env["https_redirect"], env["hsts_max_age"]) == (False, 600)
        assert env["custom_domains"] == ["shop.example.org"]
    detached = browser_like.post(
        "/domains/shop.example.org/remove", data={"csrf_token": csrf_of(page.text)}
    )
    assert "Detached shop.example.org." in detached.text and "No custom domains" in detached.text
