"""The pure parts of backing services: names, variables, merging, configuration."""

from __future__ import annotations

import pytest

from phemeral.errors import InvalidInput
from phemeral.services.manager import backup_name, enough_room
from phemeral.services.spec import (
    Endpoint,
    ServiceKind,
    check_connection_limit,
    check_kind,
    check_service_name,
    database_identifier,
    default_service_name,
    merge_variables,
    pg_hba,
    redis_config,
    service_variables,
)


def test_postgres_variables_are_consistent_with_the_url() -> None:
    e = Endpoint(ServiceKind.POSTGRES, "10.0.0.1", 15433, "ph_a_x", "p@ss/w:rd", "ph_a_x")
    v = service_variables(e)
    assert v["DATABASE_URL"] == "postgresql://ph_a_x:p%40ss%2Fw%3Ard@10.0.0.1:15433/ph_a_x"
    assert (v["PGHOST"], v["PGPORT"], v["PGUSER"], v["PGPASSWORD"], v["PGDATABASE"]) == (
        "10.0.0.1",
        "15433",
        "ph_a_x",
        "p@ss/w:rd",
        "ph_a_x",
    )


def test_redis_variable_and_ipv6_hosts() -> None:
    v = service_variables(Endpoint(ServiceKind.REDIS, "::1", 16000, "default", "pw"))
    assert v == {"REDIS_URL": "redis://default:pw@[::1]:16000/0"}


def test_user_variables_win_and_say_what_they_hide() -> None:
    merged = merge_variables(
        {"DATABASE_URL": "mine", "DEBUG": "1"},
        {"db": {"DATABASE_URL": "svc", "PGHOST": "h"}, "cache": {"REDIS_URL": "r"}},
    )
    by_key = {m.key: m for m in merged}
    assert by_key["DATABASE_URL"].value == "mine"
    assert by_key["DATABASE_URL"].source == "user" and by_key["DATABASE_URL"].shadows == "db"
    assert by_key["PGHOST"].source == "service db" and by_key["PGHOST"].shadows is None
    assert by_key["DEBUG"].shadows is None
    assert [m.key for m in merged] == sorted(by_key)


@pytest.mark.parametrize("name", ["a", "shop-db", "x1-y2"])
def test_good_names(name: str) -> None:
    assert check_service_name(name) == name


@pytest.mark.parametrize("name", ["", "1a", "A", "a_b", "a-", "a--b", "a" * 41, "a.b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_service_name(name)


def test_default_names_fit_and_stay_valid() -> None:
    long = default_service_name("p" * 40, "e" * 20, ServiceKind.POSTGRES)
    assert check_service_name(long) == long
    assert default_service_name("shop", "production", ServiceKind.REDIS) == "shop-production-redis"


def test_identifiers_are_postgres_safe() -> None:
    ident = database_identifier("a" * 40, "abc123")
    assert len(ident) <= 63 and ident.startswith("ph_") and "-" not in ident


def test_limits_and_kinds() -> None:
    assert check_connection_limit(None) is None and check_connection_limit(5) == 5
    for bad in (0, -1, 1001):
        with pytest.raises(InvalidInput):
            check_connection_limit(bad)
    assert check_kind("redis") == ServiceKind.REDIS
    with pytest.raises(InvalidInput, match="postgres or redis"):
        check_kind("mysql")


def test_redis_config_keeps_admin_commands_for_the_platform() -> None:
    conf = redis_config(
        host="127.0.0.1",
        port=1,
        directory="/d",
        password="app",
        admin_password="adm",
        maxmemory_mb=8,
    )
    assert "user default on >app ~* &* +@all -@admin" in conf
    assert "user phemeral on >adm ~* &* +@all" in conf
    assert "maxmemory 8mb" in conf and "appendonly yes" in conf
    rotated = redis_config(
        host="127.0.0.1",
        port=1,
        directory="/d",
        password="new",
        admin_password="adm",
        maxmemory_mb=8,
        previous_passwords=("old",),
    )
    assert "user default on >new >old ~* &* +@all -@admin" in rotated


def test_rotation_keeps_one_previous_generation() -> None:
    from phemeral.services.manager import ServiceRecord, rotated

    pg = ServiceRecord("db", ServiceKind.POSTGRES, "embedded", "ph_db_x", 1, "p0")
    one = rotated(pg, "p1", keep_previous=True)
    assert (one.login, one.password, one.previous) == ("ph_db_x_r1", "p1", (("", "p0"),))
    assert one.logins() == ["ph_db_x_r1", "ph_db_x"]
    two = rotated(one, "p2", keep_previous=True)
    assert two.login == "ph_db_x_r2" and two.previous == (("ph_db_x_r1", "p1"),)
    assert rotated(two, "p3", keep_previous=False).previous == ()
    redis = rotated(
        ServiceRecord("c", ServiceKind.REDIS, "embedded", "c-x", 1, "a"), "b", keep_previous=True
    )
    assert redis.user == "" and redis.previous == (("", "a"),)


def test_pg_hba_only_lets_roles_reach_their_own_database() -> None:
    lines = [ln.split() for ln in pg_hba("phemeral").splitlines() if not ln.startswith("#")]
    assert lines == [
        ["host", "all", "phemeral", "all", "scram-sha-256"],
        ["host", "samerole", "all", "all", "scram-sha-256"],
    ]


def test_backup_names_and_disk_room() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert backup_name("db", ServiceKind.POSTGRES, when, "final") == (
        "db-20260102T030405000006Z-final.dump"
    )
    assert backup_name("c", ServiceKind.REDIS, when).endswith(".rdb")
    assert not enough_room(1 << 20) and enough_room(1 << 30)
