"""What a backing service is, as values: kinds, names, credentials, the variables an app sees,
how they merge with the user's own, and the configuration files the servers run with."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from phemeral.errors import InvalidInput


class ServiceKind(StrEnum):
    POSTGRES = "postgres"
    REDIS = "redis"


NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
POSTGRES_VARIABLES = ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
REDIS_VARIABLES = ("REDIS_URL",)
MAX_CONNECTION_LIMIT = 1000


def check_kind(kind: str) -> ServiceKind:
    try:
        return ServiceKind(kind)
    except ValueError:
        raise InvalidInput(f"service kind must be postgres or redis, not {kind!r}") from None


def check_service_name(name: str) -> str:
    if not NAME.match(name) or name.endswith("-") or "--" in name:
        raise InvalidInput(
            f"service name {name!r} is not valid: up to 40 lower-case letters, digits and "
            "single hyphens, starting with a letter"
        )
    return name


def default_service_name(project: str, environment: str, kind: ServiceKind) -> str:
    """``{project}-{environment}-{kind}``, cut to 40 characters at a hyphen-free end."""
    name = f"{project}-{environment}-{kind.value}"
    if len(name) > 40:
        name = f"{project[:20]}-{environment[:10]}-{kind.value}"[:40].rstrip("-")
    return name.replace("--", "-")


def check_connection_limit(limit: int | None) -> int | None:
    if limit is not None and not 1 <= limit <= MAX_CONNECTION_LIMIT:
        raise InvalidInput(f"connection limit must be between 1 and {MAX_CONNECTION_LIMIT}")
    return limit


def database_identifier(name: str, salt: str) -> str:
    """The PostgreSQL database and role name of service ``name``: one identifier for both, so
    pg_hba's ``samerole`` keeps each role to its own database; ``salt`` (random, per service)
    keeps platforms that share one server apart."""
    return f"ph_{name.replace('-', '_')}_{salt}"[:63]


def new_password() -> str:
    """32 URL-safe characters (≈ 190 bits): no quoting needed in URLs or config files."""
    return secrets.token_urlsafe(24)


def new_salt() -> str:
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Endpoint:
    """Where an app reaches a service, and as whom."""

    kind: ServiceKind
    host: str
    port: int
    user: str
    password: str
    database: str | None = None


def service_variables(endpoint: Endpoint) -> dict[str, str]:
    """The variables a deployment of the service's environment receives."""
    e = endpoint
    host = f"[{e.host}]" if ":" in e.host else e.host
    if e.kind == ServiceKind.POSTGRES:
        assert e.database is not None
        url = f"postgresql://{quote(e.user, safe='')}:{quote(e.password, safe='')}@{host}:{e.port}"
        return {
            "DATABASE_URL": f"{url}/{quote(e.database, safe='')}",
            "PGHOST": e.host,
            "PGPORT": str(e.port),
            "PGUSER": e.user,
            "PGPASSWORD": e.password,
            "PGDATABASE": e.database,
        }
    auth = f"{quote(e.user, safe='')}:{quote(e.password, safe='')}"
    return {"REDIS_URL": f"redis://{auth}@{host}:{e.port}/0"}


@dataclass(frozen=True)
class Sourced:
    """One variable of a deployment-to-be: its value, where it comes from, what it shadows."""

    key: str
    value: str
    source: str  # "user" or "service NAME"
    shadows: str | None = None  # a user value hides this service's value


def merge_variables(
    user: Mapping[str, str], services: Mapping[str, Mapping[str, str]]
) -> list[Sourced]:
    """User variables win over service ones; services are applied in name order.

    ``services`` maps a service name to the variables it provides.
    """
    merged: dict[str, Sourced] = {}
    for name in sorted(services):
        for key, value in services[name].items():
            merged.setdefault(key, Sourced(key, value, f"service {name}"))
    for key, value in user.items():
        below = merged.get(key)
        shadows = below.source.removeprefix("service ") if below else None
        merged[key] = Sourced(key, value, "user", shadows)
    return [merged[k] for k in sorted(merged)]


def redis_config(
    *,
    host: str,
    port: int,
    directory: str,
    password: str,
    admin_password: str,
    maxmemory_mb: int,
    previous_passwords: tuple[str, ...] = (),
) -> str:
    """One Redis service's configuration: its own port, password, memory cap, persistence.

    Apps log in as ``default`` and may not run administrative commands (CONFIG, SAVE,
    SHUTDOWN, DEBUG, replication, ACL): those are for the platform's ``phemeral`` user.
    """
    return "\n".join(
        [
            f"bind {host}",
            f"port {port}",
            "protected-mode yes",
            "daemonize yes",
            f"pidfile {directory}/redis.pid",
            f"logfile {directory}/redis.log",
            f"dir {directory}",
            "dbfilename dump.rdb",
            "save 3600 1 300 100 60 10000",
            "appendonly yes",
            "appendfsync everysec",
            "databases 16",
            f"maxmemory {maxmemory_mb}mb",
            "maxmemory-policy noeviction",
            "maxclients 1000",
            "timeout 0",
            "tcp-keepalive 60",
            "enable-protected-configs no",
            "enable-debug-command no",
            "enable-module-command no",
            "user default on "
            + " ".join(f">{p}" for p in (password, *previous_passwords))
            + " ~* &* +@all -@admin",
            f"user phemeral on >{admin_password} ~* &* +@all",
            "",
        ]
    )


def pg_hba(admin_user: str) -> str:
    """The embedded cluster's only entries: the platform's admin role anywhere, and every other
    role only to the database named like a role it belongs to (``samerole``: the database's
    own role and the logins rotation adds to it), always by SCRAM password."""
    return (
        "# TYPE  DATABASE  USER  ADDRESS  METHOD  (written by Phemeral)\n"
        f"host    all       {admin_user}  all  scram-sha-256\n"
        "host    samerole  all   all      scram-sha-256\n"
    )


def pg_config(*, host: str, port: int) -> str:
    """Settings appended to the embedded cluster's postgresql.conf (small: many share a host)."""
    return "\n".join(
        [
            "# Phemeral's settings",
            f"listen_addresses = '{host}'",
            f"port = {port}",
            "unix_socket_directories = ''",
            "password_encryption = 'scram-sha-256'",
            "max_connections = 200",
            "shared_buffers = 32MB",
            "dynamic_shared_memory_type = posix",
            "fsync = on",
            "logging_collector = off",
            "log_connections = off",
            "",
        ]
    )
