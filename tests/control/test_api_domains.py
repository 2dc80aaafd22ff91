"""Custom domains over HTTP, against SQLite and PostgreSQL: attach, refuse, list, detach, and the
environment's HTTPS settings. No HTTPS listener here, so no certificate is ever ordered."""

from __future__ import annotations

import httpx

from .serverkit import Server, unique


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["code"]


def test_domains_attach_to_exactly_one_environment(api: httpx.Client, server: Server) -> None:
    shop, blog = unique("shop"), unique("blog")
    for name in (shop, blog):
        assert api.post("/projects", json={"name": name}).status_code == 201
    assert api.post(f"/projects/{shop}/environments", json={"name": "staging"}).status_code == 201
    host = f"{shop}.example.org"
    added = api.post("/domains", json={"name": host.upper() + ".", "project": shop})
    assert added.status_code == 201, added.text
    body = added.json()
    assert (body["name"], body["environment"]) == (host, "production")
    assert body["dns"] == {
        "type": "CNAME",
        "name": host,
        "value": f"{shop}-production.phemeral.localhost",
    }
    assert body["certificate"]["state"] == "pending"
    assert body["certificate"]["last_error"] is None
    # one environment only, across projects too
    again = api.post("/domains", json={"name": host, "project": blog})
    assert error(again) == (409, "conflict")
    again = api.post("/domains", json={"name": host, "project": shop, "environment": "staging"})
    assert error(again) == (409, "conflict")
    for bad in ("phemeral.localhost", f"x.{shop}.phemeral.localhost", "*.example.org", "nodot"):
        assert error(api.post("/domains", json={"name": bad, "project": shop}))[0] in (400, 422)
    missing = api.post(
        "/domains", json={"name": "a.example.org", "project": shop, "environment": "x"}
    )
    assert error(missing)[0] == 404
    assert [d["name"] for d in api.get("/domains", params={"project": shop}).json()["items"]] == [
        host
    ]
    assert api.get("/domains", params={"project": blog}).json()["items"] == []
    env = api.get(f"/projects/{shop}/environments").json()["items"]
    assert [e["custom_domains"] for e in env if e["name"] == "production"] == [[host]]
    # the router routes it: no deployment yet, so the environment's own 404 page
    routed = httpx.get(server.url + "/", headers={"Host": host})
    assert routed.status_code == 404 and "no live deployment" in routed.text
    assert api.post(f"/domains/{host}/renew").json()["certificate"]["state"] == "pending"
    assert api.delete(f"/domains/{host}").status_code == 204
    assert error(api.get(f"/domains/{host}")) == (404, "not_found")
    assert "There is no app" in httpx.get(server.url + "/", headers={"Host": host}).text


def test_https_settings_of_an_environment(api: httpx.Client) -> None:
    name = unique("https")
    assert api.post("/projects", json={"name": name}).status_code == 201
    env = f"/projects/{name}/environments/production"
    shown = api.get(f"/projects/{name}/environments").json()["items"][0]
    assert (shown["https_redirect"], shown["hsts_max_age"]) == (True, 0)
    patched = api.patch(env, json={"https_redirect": False, "hsts_max_age": 31536000})
    assert (patched.json()["https_redirect"], patched.json()["hsts_max_age"]) == (False, 31536000)
    assert error(api.patch(env, json={"hsts_max_age": -1}))[0] == 422
