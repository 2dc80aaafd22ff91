"""`phemeral services …` and the environment/project commands that involve services, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from phemeral.cli import main

from .kit import Server, unique

pytestmark = [pytest.mark.slow, pytest.mark.root]


def run(server: Server, *args: str, answer: str | None = None) -> Result:
    env = {"PHEMERAL_URL": server.url, "PHEMERAL_DATA_DIR": str(server.data_dir)}
    return CliRunner().invoke(main, list(args), env=env, input=answer, catch_exceptions=False)


def test_services_from_the_command_line(server: Server) -> None:
    project = unique("cli")
    assert run(server, "projects", "create", project).exit_code == 0
    made = run(server, "services", "create", "postgres", "--project", project)
    assert made.exit_code == 0, made.output
    name = f"{project}-production-postgres"
    assert f"created postgres service {name}" in made.output and "DATABASE_URL" in made.output
    clash = run(server, "services", "create", "postgres", "--project", project)
    assert clash.exit_code == 1 and "already exists" in clash.output

    listed = json.loads(run(server, "services", "list", project, "--json").output)
    assert [s["name"] for s in listed["items"]] == [name]
    shown = run(server, "services", "show", name, "--show-credentials", "--json")
    url = json.loads(shown.output)["credentials"]["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (7)")
    assert "PGPASSWORD" not in run(server, "services", "show", name).output.split("variables")[0]

    variables = json.loads(run(server, "env", "list", project, "--json").output)["items"]
    assert {v["source"] for v in variables} == {f"service {name}"}

    backup = json.loads(run(server, "services", "backup", name, "--json").output)
    assert Path(backup["path"]).is_file()
    rotated = run(server, "services", "credentials", "rotate", name)
    assert rotated.exit_code == 0 and "deployments created from now on" in rotated.output

    kept = run(server, "services", "delete", name, answer="n\n")
    assert kept.exit_code == 1  # aborted at the question
    assert json.loads(run(server, "services", "show", name, "--json").output)["name"] == name
    deleted = run(server, "services", "delete", name, answer="y\n")
    assert deleted.exit_code == 0 and "final backup:" in deleted.output
    final = Path(deleted.output.split("final backup: ")[1].split()[0])
    assert final.is_file()

    again = run(server, "services", "create", "postgres", "--project", project)
    assert again.exit_code == 0, again.output
    restored = run(server, "services", "restore", name, str(final))
    assert restored.exit_code == 0, restored.output
    url = json.loads(run(server, "services", "show", name, "--show-credentials", "--json").output)
    with psycopg.connect(url["credentials"]["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]

    staging = run(
        server,
        "environments",
        "create",
        project,
        "staging",
        "--copy-services-from",
        "production",
        "--with-data",
    )
    assert staging.exit_code == 0 and "schema and data" in staging.output
    refused = run(server, "environments", "delete", project, "staging", answer="n\n")
    assert refused.exit_code == 1 and "its services" in refused.output
    gone = run(server, "projects", "delete", project, answer="y\n")
    assert gone.exit_code == 0, gone.output
    assert gone.output.count("-final.dump") == 2  # production's and staging's
    assert run(server, "services", "show", name).exit_code == 1
