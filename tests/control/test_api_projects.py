"""Projects, environments and domains over HTTP, against SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from .serverkit import Server, unique


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"]


def test_health_and_openapi_need_no_token(server: Server) -> None:
    assert httpx.get(server.url + "/api/health").json()["database"] == "ok"
    spec = httpx.get(server.url + "/api/openapi.json").json()
    assert "/api/projects/{name}/deployments" in spec["paths"]


def test_every_other_route_needs_the_right_token(server: Server) -> None:
    assert error(httpx.get(server.url + "/api/projects")) == (401, "unauthorized")
    with server.client(token="phm_wrong") as wrong:
        assert error(wrong.get("/projects")) == (401, "unauthorized")
        assert error(wrong.get("/deployments/abcdefghijkl")) == (401, "unauthorized")
    assert (server.data_dir / "admin-token").stat().st_mode & 0o777 == 0o600


def test_create_show_patch_delete(api: httpx.Client) -> None:
    name = unique("shop")
    created = api.post("/projects", json={"name": name, "start_command": "gunicorn app:app"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["uid"] >= 20001 and body["webhook_secret"]
    (production,) = body["environments"]
    assert production["name"] == "production" and production["branches"] == ["main"]
    assert production["domains"][0]["label"] == f"{name}-production"

    shown = api.get(f"/projects/{name}").json()
    assert "webhook_secret" not in shown and shown["start_command"] == "gunicorn app:app"
    assert name in [p["name"] for p in api.get("/projects").json()["items"]]

    patched = api.patch(f"/projects/{name}", json={"start_command": None, "python_version": "3.12"})
    assert patched.json()["start_command"] is None and patched.json()["python_version"] == "3.12"

    assert api.delete(f"/projects/{name}").status_code == 200
    assert error(api.get(f"/projects/{name}")) == (404, "not_found")
    assert error(api.delete(f"/projects/{name}")) == (404, "not_found")


def test_project_uids_are_unique(api: httpx.Client) -> None:
    uids = [api.post("/projects", json={"name": unique("uid")}).json()["uid"] for _ in range(3)]
    assert len(set(uids)) == 3 and all(u > 20000 for u in uids)


def test_a_deleted_projects_uid_is_never_handed_out_again(api: httpx.Client) -> None:
    """Not max(uid) + 1 over the live rows: deleting the newest project frees nothing."""
    first = api.post("/projects", json={"name": unique("gone")}).json()
    assert api.delete(f"/projects/{first['name']}").status_code == 200
    second = api.post("/projects", json={"name": unique("next")}).json()
    assert second["uid"] > first["uid"]
    assert api.delete(f"/projects/{second['name']}").status_code == 200
    again = api.post("/projects", json={"name": first["name"]}).json()  # the same name, too
    assert again["uid"] > second["uid"]


def test_bad_input_is_refused_with_a_message_and_changes_nothing(api: httpx.Client) -> None:
    for bad in ("Upper", "-lead", "trail-", "a" * 41, "under_score", "api", ""):
        assert error(api.post("/projects", json={"name": bad})) == (422, "invalid_input"), bad
    assert error(api.post("/projects", json={})) == (422, "invalid_input")
    name = unique()
    api.post("/projects", json={"name": name})
    assert error(api.post("/projects", json={"name": name})) == (409, "conflict")
    for change in (
        {"python_version": "three"},
        {"package_manager": "conda"},
        {"root_dir": "../etc"},
        {"repo_url": "/srv/repo"},  # local paths need --allow-local-repos
        {"colour": "blue"},
    ):
        assert error(api.patch(f"/projects/{name}", json=change))[0] == 422, change
    assert api.get(f"/projects/{name}").json()["python_version"] is None


def test_environments_branches_and_domains(api: httpx.Client) -> None:
    name = unique("web")
    api.post("/projects", json={"name": name})
    staging = api.post(
        f"/projects/{name}/environments",
        json={"name": "staging", "branches": ["develop"], "domains": [f"{name}-next"]},
    )
    assert staging.status_code == 201, staging.text
    labels = [d["label"] for d in staging.json()["domains"]]
    assert labels == [f"{name}-staging", f"{name}-next"]
    envs = api.get(f"/projects/{name}/environments").json()["items"]
    assert [e["name"] for e in envs] == ["production", "staging"]

    # a branch maps to one environment; domains are unique platform-wide and valid labels
    taken = api.post(f"/projects/{name}/environments", json={"name": "qa", "branches": ["main"]})
    assert error(taken) == (409, "conflict")
    other = unique("web")
    api.post("/projects", json={"name": other})
    clash = {"name": "qa", "domains": [f"{name}-next"]}
    assert error(api.post(f"/projects/{other}/environments", json=clash)) == (409, "conflict")
    for label in ("bad_label", "www", "abcdefghijkl", "x" * 64):
        body = {"name": "qa", "domains": [label]}
        assert error(api.post(f"/projects/{other}/environments", json=body))[0] == 422, label
    assert [e["name"] for e in api.get(f"/projects/{other}/environments").json()["items"]] == [
        "production"
    ]


def test_default_domains_of_different_projects_cannot_collide(api: httpx.Client) -> None:
    base = unique("c")
    api.post("/projects", json={"name": f"{base}-x"})
    api.post(f"/projects/{base}-x/environments", json={"name": "y"})  # {base}-x-y
    api.post("/projects", json={"name": base})
    response = api.post(f"/projects/{base}/environments", json={"name": "x-y"})
    assert error(response) == (409, "conflict")
    assert "already in use" in response.json()["error"]["message"]


def test_unknown_things_are_404(api: httpx.Client) -> None:
    assert error(api.get("/deployments/zzzzzzzzzzzz")) == (404, "not_found")
    assert error(api.get("/projects/nope-404/deployments")) == (404, "not_found")
    assert error(api.get("/deployments/zzzzzzzzzzzz/logs/build")) == (404, "not_found")
    assert error(api.post("/deployments/zzzzzzzzzzzz/promote", json={})) == (404, "not_found")


def test_change_branches_and_domains_of_an_environment(api: httpx.Client) -> None:
    name = unique("envp")
    api.post("/projects", json={"name": name})
    api.post(f"/projects/{name}/environments", json={"name": "staging", "branches": ["dev"]})
    base = f"/projects/{name}/environments/production"
    changed = api.patch(base, json={"branches": ["master"], "domains": [f"{name}-www"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["branches"] == ["master"]
    assert [d["label"] for d in changed.json()["domains"]] == [
        f"{name}-production",
        f"{name}-www",
    ]
    assert error(api.patch(base, json={"branches": ["dev"]})) == (409, "conflict")
    assert error(api.patch(base, json={"domains": ["bad_label"]}))[0] == 422
    cleared = api.patch(base, json={"domains": []}).json()
    assert [d["label"] for d in cleared["domains"]] == [f"{name}-production"]
    assert cleared["branches"] == ["master"]  # untouched when not sent


def test_openapi_declares_bearer_auth(server: Server) -> None:
    spec = httpx.get(server.url + "/api/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_odd_requests_get_a_4xx_in_the_error_shape_never_a_500(api: httpx.Client) -> None:
    name = unique("odd")
    api.post("/projects", json={"name": name})
    long_id = "x" * 5000
    requests = [
        ("GET", f"/deployments/{long_id}", None),
        ("GET", f"/projects/{name}/deployments?limit=abc", None),
        ("GET", f"/projects/{name}/deployments?limit=-1", None),
        ("GET", f"/projects/{name}/deployments?environment=nope", None),
        ("GET", "/deployments/abcdefghijkl/logs/runtime?order=sideways", None),
        ("POST", "/projects", "not json"),
        ("POST", "/projects", "[1, 2]"),
        ("PATCH", f"/projects/{name}", '{"start_command": 5}'),
        ("POST", f"/projects/{name}/environments/production/variables", '{"values": "A=1"}'),
        ("DELETE", "/projects", None),
        ("GET", "/nowhere", None),
    ]
    for method, path, body in requests:
        response = api.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (method, path, response.status_code)
        assert set(response.json()["error"]) == {"code", "message"}, (method, path)
