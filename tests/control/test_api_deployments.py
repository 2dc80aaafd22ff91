"""Deployments built by the real builder: command resolution, promotion, rollback, logs."""

from __future__ import annotations

import json

import httpx
import pytest

from .serverkit import FASTAPI_APP, NOT_A_PROJECT, Server, unique, upload, wait_done

pytestmark = pytest.mark.slow
DEFAULT_COMMAND = "uvicorn main:app --host 0.0.0.0 --port $PORT"


def test_command_resolution_custom_deploy_clear_deploy(api: httpx.Client) -> None:
    name = unique("cmd")
    api.post("/projects", json={"name": name, "start_command": "uvicorn main:app --port $PORT"})
    first = upload(api, name, FASTAPI_APP)
    assert first["start_command_source"] == "custom"  # snapshotted at creation
    api.patch(f"/projects/{name}", json={"start_command": None})  # cleared while it builds
    first_done = wait_done(api, str(first["id"]))
    assert first_done["status"] == "successful", first_done["failure_reason"]
    assert first_done["start_command"] == "uvicorn main:app --port $PORT"
    assert first_done["start_command_source"] == "custom"

    second = wait_done(api, str(upload(api, name, FASTAPI_APP)["id"]))
    assert second["status"] == "successful", second["failure_reason"]
    assert second["start_command"] == DEFAULT_COMMAND
    assert second["start_command_source"] == "autodetected"
    assert second["settings"]["framework"] == "fastapi"  # the detection snapshot

    # setting a new custom command later changes neither existing deployment
    api.patch(f"/projects/{name}", json={"start_command": "hypercorn main:app"})
    assert api.get(f"/deployments/{first['id']}").json()["start_command"] == (
        "uvicorn main:app --port $PORT"
    )
    assert api.get(f"/deployments/{second['id']}").json()["start_command"] == DEFAULT_COMMAND


def test_promote_rollback_and_audit_trail(api: httpx.Client) -> None:
    name = unique("roll")
    api.post("/projects", json={"name": name})
    one = wait_done(api, str(upload(api, name, FASTAPI_APP)["id"]))
    two = wait_done(api, str(upload(api, name, FASTAPI_APP)["id"]))
    held = wait_done(api, str(upload(api, name, FASTAPI_APP, promote="false")["id"]))
    broken = wait_done(api, str(upload(api, name, NOT_A_PROJECT)["id"]))
    assert [d["status"] for d in (one, two, held)] == ["successful"] * 3
    assert broken["status"] == "failed" and "No Python project" in str(broken["failure_reason"])

    def current() -> str | None:
        env = api.get(f"/projects/{name}/environments").json()["items"][0]
        return env["current_deployment_id"]

    assert current() == two["id"]  # manual deploys promote; --no-promote and failures do not
    assert not api.get(f"/deployments/{held['id']}").json()["is_current"]

    rollback = api.post(f"/deployments/{one['id']}/promote", json={"reason": "bad release"})
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["is_current"] and current() == one["id"]
    refused = api.post(f"/deployments/{broken['id']}/promote", json={})
    assert refused.status_code == 409 and current() == one["id"]
    again = api.post(f"/deployments/{one['id']}/promote", json={})
    assert again.status_code == 409

    trail = api.get(f"/projects/{name}/environments/production/promotions").json()["items"]
    moves = [(m["from"], m["to"], m["actor"], m["reason"]) for m in reversed(trail)]
    assert moves == [
        (None, one["id"], "admin", "manual deploy"),
        (one["id"], two["id"], "admin", "manual deploy"),
        (two["id"], one["id"], "admin", "bad release"),
    ]
    assert all(m["at"] for m in trail)

    listed = api.get(f"/projects/{name}/deployments").json()
    assert [d["id"] for d in listed["items"]] == [broken["id"], held["id"], two["id"], one["id"]]
    assert [d["is_current"] for d in listed["items"]] == [False, False, False, True]


def test_build_log_pages_and_stream(server: Server, api: httpx.Client) -> None:
    name = unique("logs")
    api.post("/projects", json={"name": name})
    deployment = upload(api, name, FASTAPI_APP)
    streamed = []
    end = None
    with api.stream("GET", f"/deployments/{deployment['id']}/logs/build/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "end":
                    end = data
                    break
                streamed.append(data)
    assert end == {"status": "successful"}
    stages = [line["stage"] for line in streamed]
    assert stages[0] == "queue" and {"detect", "install", "release"} <= set(stages)

    pages, cursor = [], None
    while True:
        page = api.get(
            f"/deployments/{deployment['id']}/logs/build", params={"limit": 7, "cursor": cursor}
        ).json()
        if not page["lines"]:
            break
        pages.extend(page["lines"])
        cursor = page["next_cursor"]
    assert pages == streamed  # same lines, same order, by pages of 7


def test_upload_must_be_a_non_empty_archive(api: httpx.Client) -> None:
    name = unique("up")
    api.post("/projects", json={"name": name})
    empty = api.post(
        f"/projects/{name}/deployments", files={"archive": ("a.tar.gz", b"", "application/gzip")}
    )
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "bad_source"
    missing = api.post(f"/projects/{name}/deployments", data={"environment": "production"})
    assert missing.status_code == 422
    nowhere = api.post(
        f"/projects/{name}/deployments",
        files={"archive": ("a.tar.gz", b"x", "application/gzip")},
        data={"environment": "nope"},
    )
    assert nowhere.status_code == 404
    assert api.get(f"/projects/{name}/deployments").json()["items"] == []


def test_create_project_on_first_deploy(api: httpx.Client) -> None:
    name = unique("auto")
    created = upload(api, name, NOT_A_PROJECT, create_project="true")
    assert created["project"] == name and created["environment"] == "production"
    assert wait_done(api, str(created["id"]))["status"] == "failed"


def test_the_project_worker_count_reaches_new_deployments_as_web_concurrency(
    api: httpx.Client,
) -> None:
    name = unique("workers")
    created = api.post("/projects", json={"name": name, "workers": 3})
    assert created.status_code == 201 and created.json()["workers"] == 3
    for bad in (0, 65, "two", 2.5, True):
        refused = api.patch(f"/projects/{name}", json={"workers": bad})
        assert refused.status_code == 422, bad
    done = wait_done(api, str(upload(api, name, FASTAPI_APP)["id"]))
    assert done["service_variables"]["WEB_CONCURRENCY"] == "project setting workers"
    # An environment's own WEB_CONCURRENCY is more specific: it wins.
    variables = f"/projects/{name}/environments/production/variables"
    assert api.post(variables, json={"values": {"WEB_CONCURRENCY": "2"}}).status_code == 200
    again = wait_done(api, str(upload(api, name, FASTAPI_APP)["id"]))
    assert "WEB_CONCURRENCY" not in again["service_variables"]
    assert api.patch(f"/projects/{name}", json={"workers": None}).json()["workers"] is None
