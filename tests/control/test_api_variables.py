"""Environment variables: validated, secrets masked and encrypted at rest, snapshotted."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import create_engine, text

from phemeral.secrets import SecretBox

from .serverkit import NOT_A_PROJECT, Server, database_uri, unique, upload, wait_done


def raw(server: Server, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(database_uri(server))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_secrets_are_masked_and_encrypted_at_rest(server: Server, api: httpx.Client) -> None:
    name = unique("vars")
    api.post("/projects", json={"name": name})
    base = f"/projects/{name}/environments/production/variables"
    assert api.post(base, json={"values": {"DEBUG": "1"}}).status_code == 200
    secret = "s3cr3t-value-do-not-print"
    assert api.post(base, json={"values": {"API_KEY": secret}, "secret": True}).status_code == 200
    listed = {v["key"]: v for v in api.get(base).json()["items"]}
    assert listed["DEBUG"]["value"] == "1" and not listed["DEBUG"]["secret"]
    assert listed["API_KEY"]["secret"] and secret not in json.dumps(listed)

    rows = raw(server, "SELECT key, value FROM env_vars WHERE key IN ('DEBUG', 'API_KEY')")
    stored = dict(rows)
    assert secret not in str(stored) and stored["API_KEY"] != secret
    box = SecretBox.open(server.data_dir)
    assert box.decrypt(str(stored["API_KEY"])) == secret
    assert oct((server.data_dir / "secret.key").stat().st_mode & 0o777) == "0o600"

    unset = api.post(f"{base}/unset", json={"keys": ["DEBUG"]})
    assert unset.json()["unset"] == ["DEBUG"]
    assert [v["key"] for v in api.get(base).json()["items"]] == ["API_KEY"]
    assert api.post(f"{base}/unset", json={"keys": ["DEBUG"]}).status_code == 404


@pytest.mark.parametrize(
    "values",
    [{"PORT": "1"}, {"PATH": "/x"}, {"PHEMERAL_URL": "x"}, {"1BAD": "x"}, {"A-B": "x"}],
)
def test_invalid_or_platform_names_are_refused(api: httpx.Client, values: dict[str, str]) -> None:
    name = unique("bad")
    api.post("/projects", json={"name": name})
    base = f"/projects/{name}/environments/production/variables"
    response = api.post(base, json={"values": {"OK": "1", **values}})
    assert response.status_code == 422, response.text
    assert api.get(base).json()["items"] == []  # nothing half-applied


def test_nul_bytes_are_refused(api: httpx.Client) -> None:
    name = unique("nul")
    api.post("/projects", json={"name": name})
    base = f"/projects/{name}/environments/production/variables"
    assert api.post(base, json={"values": {"A": "x\x00y"}}).status_code == 422


def test_each_deployment_snapshots_the_variables_of_its_creation(
    server: Server, api: httpx.Client
) -> None:
    name = unique("snap")
    api.post("/projects", json={"name": name})
    base = f"/projects/{name}/environments/production/variables"
    api.post(base, json={"values": {"COLOUR": "blue", "TOKEN": "t1"}, "secret": False})
    first = upload(api, name, NOT_A_PROJECT)
    api.post(base, json={"values": {"COLOUR": "green"}})
    api.post(f"{base}/unset", json={"keys": ["TOKEN"]})
    second = upload(api, name, NOT_A_PROJECT)
    for d in (first, second):
        wait_done(api, str(d["id"]))

    box = SecretBox.open(server.data_dir)
    snapshots = {
        deployment_id: json.loads(box.decrypt(str(blob)))
        for deployment_id, blob in raw(
            server,
            "SELECT id, env_snapshot FROM deployments WHERE id IN (:a, :b)",
            a=first["id"],
            b=second["id"],
        )
    }
    assert snapshots[first["id"]] == {"COLOUR": "blue", "TOKEN": "t1"}
    assert snapshots[second["id"]] == {"COLOUR": "green"}
    blobs = raw(server, "SELECT env_snapshot FROM deployments WHERE id = :a", a=first["id"])
    assert "blue" not in str(blobs)
