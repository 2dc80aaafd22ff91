"""Apps deployed for real through `phemeral serve` use PostgreSQL and Redis services the
platform provisions: variables injected and snapshotted, isolation, rotation, backup and
restore, copies for new environments, restarts (graceful and kill -9)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from phemeral.services.resp import RedisError, call

from .apps import DJANGO_PG, FLASK_REDIS, RAILWAY_PG
from .kit import Server, build_log, deploy, get, unique

pytestmark = [pytest.mark.slow, pytest.mark.root]


def create(api: httpx.Client, kind: str, project: str, **extra: object) -> dict[str, object]:
    response = api.post("/services", json={"kind": kind, "project": project, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def credentials(api: httpx.Client, name: str) -> dict[str, str]:
    body = api.get(f"/services/{name}", params={"reveal": "true"}).json()
    creds: dict[str, str] = body["credentials"]
    return creds


def test_flask_counts_hits_in_redis_and_a_down_redis_gives_the_apps_own_error(
    server: Server, api: httpx.Client
) -> None:
    project = unique("hits")
    api.post("/projects", json={"name": project})
    redis = create(api, "redis", project)
    d = deploy(api, project, FLASK_REDIS)
    assert d["service_variables"] == {"REDIS_URL": redis["name"]}
    hits = [get(server, d["id"]).json()["hits"] for _ in range(3)]
    assert hits == [hits[0], hits[0] + 1, hits[0] + 2]  # (the boot check counted one too)

    password = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    assert password not in build_log(api, str(d["id"]))  # never in build logs

    pidfile = next((server.data_dir / "services" / "redis").glob(f"{redis['name']}-*/redis.pid"))
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    response = get(server, d["id"], timeout=30)
    assert response.status_code == 500  # the app's own error page, at once: no hang
    assert "Internal Server Error" in response.text


def test_railway_settings_read_pg_variables_and_apps_are_isolated(
    server: Server, api: httpx.Client
) -> None:
    one, two = unique("rail"), unique("rail")
    for project in (one, two):
        api.post("/projects", json={"name": project})
    pg_one = create(api, "postgres", one)
    pg_two = create(api, "postgres", two)
    redis_two = create(api, "redis", two)
    base = f"/projects/{one}/environments/production/variables"
    other = {"OTHER_DATABASE": str(pg_two["database"]), "OTHER_REDIS_PORT": str(redis_two["port"])}
    assert api.post(base, json={"values": other}).status_code == 200

    d = deploy(api, one, RAILWAY_PG)
    seen = get(server, d["id"]).json()
    assert seen["database"] == pg_one["database"] and seen["user"] == pg_one["user"]
    probe = get(server, d["id"], "/probe").json()
    assert "other" not in probe, probe
    assert "no pg_hba.conf entry" in probe["error"] or "permission denied" in probe["error"]

    # the same check from outside: each role reaches its own database only
    mine = credentials(api, str(pg_one["name"]))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=mine["PGHOST"],
            port=mine["PGPORT"],
            user=mine["PGUSER"],
            password=mine["PGPASSWORD"],
            dbname=str(pg_two["database"]),
            connect_timeout=3,
        )
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=mine["PGHOST"],
            port=mine["PGPORT"],
            user=mine["PGUSER"],
            password=mine["PGPASSWORD"],
            dbname="postgres",
            connect_timeout=3,
        )
    # one project's Redis password does not open another's Redis
    with pytest.raises(RedisError, match="WRONGPASS"):
        call(
            str(redis_two["host"]),
            int(str(redis_two["port"])),
            "default",
            mine["PGPASSWORD"],
            "PING",
        )


def test_django_keeps_rows_across_redeploy_and_kill_9_restart(
    server: Server, api: httpx.Client
) -> None:
    project = unique("dj")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project, connection_limit=20)
    redis = create(api, "redis", project)
    redis_pw = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    call(str(redis["host"]), int(str(redis["port"])), "default", redis_pw, "SET", "kept", "yes")
    first = deploy(api, project, DJANGO_PG)
    log = build_log(api, str(first["id"]))
    assert "Applying notes.0001_initial... OK" in log  # the release command migrated
    assert credentials(api, str(pg["name"]))["PGPASSWORD"] not in log
    assert get(server, first["id"], "/add").json() == {"notes": 1}
    assert get(server, first["id"], "/add").json() == {"notes": 2}

    second = deploy(api, project, DJANGO_PG)
    assert get(server, second["id"]).json() == {"notes": 2}  # kept across a redeploy

    server.kill(signal.SIGKILL)
    server.start()
    assert get(server, second["id"]).json() == {"notes": 2}  # and across kill -9 + restart
    assert get(server, second["id"], "/add").json() == {"notes": 3}

    server.kill(signal.SIGTERM)  # graceful: the cluster stops with the platform …
    cluster = server.data_dir / "services" / "postgres" / "data"
    assert not (cluster / "postmaster.pid").exists()
    with pytest.raises(OSError):  # (the Redis server is down too)
        call(str(redis["host"]), int(str(redis["port"])), "default", redis_pw, "PING", timeout=2)
    server.start()  # … and starts again with it; the app reconnects
    with server.client() as fresh:
        assert fresh.get(f"/services/{pg['name']}").json()["status"] == "ready"
    assert get(server, second["id"]).json() == {"notes": 3}
    port = int(str(redis["port"]))  # Redis too: saved on the way down, loaded on the way up
    assert call(str(redis["host"]), port, "default", redis_pw, "GET", "kept") == b"yes"


def test_rotation_takes_effect_for_the_next_deployment(server: Server, api: httpx.Client) -> None:
    project = unique("rot")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project)
    redis = create(api, "redis", project)
    before = deploy(api, project, RAILWAY_PG)
    old = get(server, before["id"]).json()
    with psycopg.connect(credentials(api, str(pg["name"]))["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE made_before (x int)")
        conn.execute("INSERT INTO made_before VALUES (1)")
    old_redis = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]

    for svc in (pg, redis):
        rotated = api.post(f"/services/{svc['name']}/credentials/rotate")
        assert rotated.status_code == 200, rotated.text
        assert "keep working until the next rotation" in rotated.json()["note"]
    new = credentials(api, str(pg["name"]))
    assert new["PGPASSWORD"] != old["password"] and new["PGUSER"] != old["user"]
    after = deploy(api, project, RAILWAY_PG)
    seen = get(server, after["id"]).json()
    assert (seen["user"], seen["password"]) == (new["PGUSER"], new["PGPASSWORD"])
    assert seen["database"] == old["database"]
    assert get(server, before["id"]).json()["user"] == old["user"]  # the old one still works
    with psycopg.connect(new["DATABASE_URL"]) as conn:  # same data, same owner
        assert conn.execute("SELECT x FROM made_before").fetchall() == [(1,)]
        conn.execute("CREATE TABLE made_after (x int)")
    port = int(str(redis["port"]))
    new_redis = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    assert call(str(redis["host"]), port, "default", old_redis, "PING") == "PONG"
    assert call(str(redis["host"]), port, "default", new_redis, "PING") == "PONG"

    for svc in (pg, redis):  # leaked: revoke what came before, at once
        revoked = api.post(
            f"/services/{svc['name']}/credentials/rotate", params={"revoke_previous": "true"}
        )
        assert revoked.status_code == 200, revoked.text
    latest = credentials(api, str(pg["name"]))
    for user, password in ((old["user"], old["password"]), (new["PGUSER"], new["PGPASSWORD"])):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host=str(pg["host"]),
                port=int(str(pg["port"])),
                user=user,
                password=password,
                dbname=str(pg["database"]),
                connect_timeout=3,
            )
    with psycopg.connect(latest["DATABASE_URL"]) as conn:  # tables made by any login remain
        tables = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    assert tables == [("made_after", pg["database"]), ("made_before", pg["database"])]
    for password in (old_redis, new_redis):
        with pytest.raises(RedisError, match="WRONGPASS"):
            call(str(redis["host"]), port, "default", password, "PING")


def test_user_variable_wins_and_the_listing_says_so(server: Server, api: httpx.Client) -> None:
    project = unique("over")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project)
    base = f"/projects/{project}/environments/production/variables"
    api.post(base, json={"values": {"PGHOST": "db.example"}})
    items = {v["key"]: v for v in api.get(base).json()["items"]}
    assert items["PGHOST"] == {
        "key": "PGHOST",
        "value": "db.example",
        "secret": False,
        "source": "user",
        "updated_at": items["PGHOST"]["updated_at"],
        "overrides": f"service {pg['name']}",
    }
    assert items["PGPASSWORD"]["source"] == f"service {pg['name']}"
    assert items["PGPASSWORD"]["value"] != credentials(api, str(pg["name"]))["PGPASSWORD"]
    assert items["PGPORT"]["value"] == str(pg["port"])


def test_delete_then_restore_brings_the_data_back(server: Server, api: httpx.Client) -> None:
    project = unique("back")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project, name=f"{project}-db")
    redis = create(api, "redis", project, name=f"{project}-cache")
    url = credentials(api, str(pg["name"]))["DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (word text)")
        conn.execute("INSERT INTO kept VALUES ('persisted')")
    redis_pw = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    call(str(redis["host"]), int(str(redis["port"])), "default", redis_pw, "SET", "k", "v1")

    dumps = {}
    for svc in (pg, redis):
        done = api.delete(f"/services/{svc['name']}")
        assert done.status_code == 200, done.text
        dumps[svc["kind"]] = Path(done.json()["final_backup"])
        assert dumps[svc["kind"]].is_file()
        assert dumps[svc["kind"]].is_relative_to(server.data_dir)
        assert api.get(f"/services/{svc['name']}").status_code == 404

    pg = create(api, "postgres", project, name=f"{project}-db")
    redis = create(api, "redis", project, name=f"{project}-cache")
    for svc in (pg, redis):
        with dumps[str(svc["kind"])].open("rb") as f:
            restored = api.post(f"/services/{svc['name']}/restore", files={"file": f})
        assert restored.status_code == 200, restored.text
    with psycopg.connect(credentials(api, str(pg["name"]))["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT word FROM kept").fetchall() == [("persisted",)]
    redis_pw = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    assert (
        call(str(redis["host"]), int(str(redis["port"])), "default", redis_pw, "GET", "k") == b"v1"
    )


def test_new_environment_copies_services_and_deleting_it_asks_first(
    server: Server, api: httpx.Client
) -> None:
    project = unique("copy")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project)
    with psycopg.connect(credentials(api, str(pg["name"]))["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")

    made = api.post(
        f"/projects/{project}/environments",
        json={"name": "staging", "copy_services_from": "production", "copy_data": True},
    )
    assert made.status_code == 201, made.text
    (copied,) = made.json()["copied_services"]
    assert copied["contents"] == "schema and data" and copied["from"] == pg["name"]
    with psycopg.connect(credentials(api, copied["name"])["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]

    empty = api.post(
        f"/projects/{project}/environments",
        json={"name": "preview", "copy_services_from": "production"},
    )
    (blank,) = empty.json()["copied_services"]
    assert blank["contents"] == "empty"
    with psycopg.connect(credentials(api, blank["name"])["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)

    refused = api.delete(f"/projects/{project}/environments/staging")
    assert refused.status_code == 409 and copied["name"] in refused.json()["error"]["message"]
    assert api.get(f"/services/{copied['name']}").status_code == 200
    done = api.delete(
        f"/projects/{project}/environments/staging", params={"delete_services": "true"}
    )
    assert done.status_code == 200, done.text
    assert Path(done.json()["services"][0]["final_backup"]).is_file()
    assert api.get(f"/services/{copied['name']}").status_code == 404


def test_clear_errors_for_clashes_and_bad_input(api: httpx.Client) -> None:
    project = unique("err")
    api.post("/projects", json={"name": project})
    create(api, "redis", project, name=f"{project}-r")
    clash = api.post(
        "/services", json={"kind": "redis", "project": project, "name": f"{project}-r"}
    )
    assert clash.status_code == 409 and "already exists" in clash.json()["error"]["message"]
    second = api.post(
        "/services", json={"kind": "redis", "project": project, "name": f"{project}-s"}
    )
    assert second.status_code == 409 and "one of each kind" in second.json()["error"]["message"]
    bad = api.post("/services", json={"kind": "postgres", "project": project, "name": "Bad_Name"})
    assert bad.status_code == 422
    limit = api.post(
        "/services", json={"kind": "postgres", "project": project, "connection_limit": 0}
    )
    assert limit.status_code == 422
    assert api.post("/services", json={"kind": "mysql", "project": project}).status_code == 422
    gone = api.post("/services", json={"kind": "redis", "project": "no-such-project"})
    assert gone.status_code == 404


def test_connection_limit_and_maxmemory_are_enforced(api: httpx.Client) -> None:
    project = unique("lim")
    api.post("/projects", json={"name": project})
    pg = create(api, "postgres", project, connection_limit=1)
    redis = create(api, "redis", project, maxmemory_mb=1)
    url = credentials(api, str(pg["name"]))["DATABASE_URL"]
    with psycopg.connect(url):
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            psycopg.connect(url, connect_timeout=3)
        patched = api.patch(f"/services/{pg['name']}", json={"connection_limit": 2})
        assert patched.status_code == 200 and patched.json()["connection_limit"] == 2
        with psycopg.connect(url):
            pass  # a second one fits now
    password = credentials(api, str(redis["name"]))["REDIS_URL"].split(":")[2].split("@")[0]
    port = int(str(redis["port"]))
    with pytest.raises(RedisError, match="OOM"):
        for i in range(64):
            call(str(redis["host"]), port, "default", password, "SET", f"k{i}", "x" * 65536)
    refused = api.patch(f"/services/{redis['name']}", json={"connection_limit": 5})
    assert refused.status_code == 422
