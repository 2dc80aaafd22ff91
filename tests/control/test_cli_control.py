"""The CLI over HTTP: output for people and machines, exit codes scripts can trust."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from phemeral.cli import main

from .serverkit import (
    NOT_A_PROJECT,
    Server,
    free_port,
    names_in_database_order,
    unique,
    upload,
)


def run(server: Server, *args: str, token: str | None = None) -> Result:
    env = {"PHEMERAL_URL": server.url, "PHEMERAL_DATA_DIR": str(server.data_dir)}
    if token:
        env["PHEMERAL_TOKEN"] = token
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_project_lifecycle_from_the_cli(server: Server) -> None:
    name = unique("cli")
    created = run(server, "projects", "create", name, "--start-command", "gunicorn app:app")
    assert created.exit_code == 0, created.output
    assert f"{name}-production" in created.output and "webhook secret" in created.output

    shown = run(server, "projects", "show", name, "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["start_command"] == "gunicorn app:app"
    cleared = run(server, "projects", "set", name, "--clear-start-command", "--json")
    assert cleared.exit_code == 0 and json.loads(cleared.output)["start_command"] is None
    both = run(server, "projects", "set", name, "--start-command", "x", "--clear-start-command")
    assert both.exit_code == 2

    env = run(server, "environments", "create", name, "staging", "--branch", "dev")
    assert env.exit_code == 0 and f"{name}-staging" in env.output
    listed = run(server, "environments", "list", name, "--json")
    assert [e["name"] for e in json.loads(listed.output)["items"]] == ["production", "staging"]

    assert run(server, "env", "set", name, "PLAIN=1").exit_code == 0
    assert run(server, "env", "set", name, "--secret", "KEY=hush-hush").exit_code == 0
    shown_vars = run(server, "env", "list", name)
    assert "PLAIN" in shown_vars.output and "hush-hush" not in shown_vars.output
    assert run(server, "env", "set", name, "PORT=1").exit_code == 2
    assert run(server, "env", "unset", name, "PLAIN").exit_code == 0
    assert run(server, "env", "unset", name, "PLAIN").exit_code == 1

    deleted = run(server, "projects", "delete", name, "--yes")
    assert deleted.exit_code == 0
    assert run(server, "projects", "show", name).exit_code == 1


def test_deployments_logs_and_promote(server: Server) -> None:
    name = unique("clid")
    with server.client() as api:
        api.post("/projects", json={"name": name})
        deployment_id = str(upload(api, name, NOT_A_PROJECT)["id"])
    follow = run(server, "logs", deployment_id, "--follow")
    assert follow.exit_code == 1, follow.output  # the build failed: scripts can tell
    assert "No Python project" in follow.output and "deployment failed" in follow.output

    page = run(server, "logs", deployment_id, "--limit", "2", "--json")
    assert len(json.loads(page.output)["lines"]) == 2
    listed = run(server, "deployments", "list", name, "--json")
    assert [d["id"] for d in json.loads(listed.output)["items"]] == [deployment_id]
    shown = run(server, "deployments", "show", deployment_id)
    assert "failed" in shown.output and "No Python project" in shown.output
    refused = run(server, "promote", deployment_id)
    assert refused.exit_code == 1 and "only successful" in refused.output


def test_clear_messages_for_the_usual_mistakes(server: Server, tmp_path: Path) -> None:
    unknown = run(server, "deployments", "show", "zzzzzzzzzzzz")
    assert unknown.exit_code == 1 and "no deployment with id" in unknown.output

    wrong = run(server, "projects", "list", token="phm_wrong")
    assert wrong.exit_code == 1 and "token is not valid" in wrong.output

    down = CliRunner().invoke(
        main,
        ["projects", "list"],
        env={"PHEMERAL_URL": f"http://127.0.0.1:{free_port()}", "PHEMERAL_DATA_DIR": str(tmp_path)},
    )
    assert down.exit_code == 1 and "is `phemeral serve` running?" in down.output

    bad = run(server, "projects", "create", "Not_Valid", "--json")
    assert bad.exit_code == 2
    assert json.loads(bad.output)["error"]["code"] == "invalid_input"
    assert httpx.get(server.url + "/api/health").status_code == 200


def test_projects_list_follows_every_page(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    base = unique("all")
    with server.client() as api:
        for i in range(5):
            assert api.post("/projects", json={"name": f"{base}-{i}"}).status_code == 201
    monkeypatch.setattr("phemeral.cli.control.PROJECTS_PAGE", 2)  # several pages
    listed = run(server, "projects", "list", "--json")
    assert listed.exit_code == 0, listed.output
    names = [p["name"] for p in json.loads(listed.output)["items"]]
    assert names == names_in_database_order(server) and len(names) >= 5
    table = run(server, "projects", "list")
    assert all(f"{base}-{i}" in table.output for i in range(5))
