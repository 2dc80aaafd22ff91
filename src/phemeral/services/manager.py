"""`ServiceManager`: the shell around the servers. It provisions, rotates, backs up, restores
and removes services, starts what the data dir holds when the platform starts and stops it
when the platform stops. It never touches the control plane's database: callers pass a
`ServiceRecord` (a service row with its decrypted credentials)."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from phemeral.errors import ServiceFailure
from phemeral.services.account import Account, service_account
from phemeral.services.endpoint import service_host
from phemeral.services.postgres import AdminTarget, Databases, EmbeddedCluster, pick_port
from phemeral.services.redis import RedisServer, RedisSpec
from phemeral.services.spec import Endpoint, ServiceKind
from phemeral.settings import Settings

log = logging.getLogger("phemeral.services")
MIN_FREE_BYTES = 64 << 20  # below this, nothing new is written into the data dir


@dataclass(frozen=True)
class ServiceRecord:
    """A service as the servers need it: identity, where it lives, its secrets (decrypted)."""

    name: str
    kind: ServiceKind
    location: str  # embedded | external
    resource: str  # PostgreSQL database + role name; Redis directory name
    port: int
    password: str
    admin_password: str = ""  # Redis: the platform's own user
    connection_limit: int | None = None
    maxmemory_mb: int | None = None
    user: str = ""  # PostgreSQL: the current login ("" = the database's own role)
    generation: int = 0  # rotations so far
    previous: tuple[tuple[str, str], ...] = ()  # (user, password) still accepted

    @property
    def login(self) -> str:
        return self.user or self.resource

    def logins(self) -> list[str]:
        return [self.login, *(user or self.resource for user, _ in self.previous)]


def rotated(record: ServiceRecord, password: str, *, keep_previous: bool) -> ServiceRecord:
    """The record after a rotation: a new login (PostgreSQL) and password; the current one
    stays accepted as the previous one unless ``keep_previous`` is false; older ones go."""
    generation = record.generation + 1
    user = f"{record.resource}_r{generation}" if record.kind == ServiceKind.POSTGRES else ""
    previous = ((record.user, record.password),) if keep_previous else ()
    return replace(record, user=user, password=password, generation=generation, previous=previous)


def enough_room(free_bytes: int) -> bool:
    return free_bytes >= MIN_FREE_BYTES


def backup_name(name: str, kind: ServiceKind, when: datetime, tag: str = "") -> str:
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    suffix = ".dump" if kind == ServiceKind.POSTGRES else ".rdb"
    return f"{name}-{stamp}{'-' + tag if tag else ''}{suffix}"


class ServiceManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "services"
        self.backups = self.root / "backups"
        self._account: Account | None = None
        self._host: str | None = None
        self._cluster: EmbeddedCluster | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """Decided once per platform process (it may start the network's namespaces)."""
        if self._host is None:
            self._host = service_host(self.settings)
        return self._host

    @property
    def account(self) -> Account:
        with self._lock:
            if self._account is None:
                self._account = service_account()
            return self._account

    @property
    def cluster(self) -> EmbeddedCluster:
        if self._cluster is None:
            self._cluster = EmbeddedCluster(self.root / "postgres", self.host, self.account)
        return self._cluster

    @property
    def postgres_location(self) -> str:
        return "external" if self.settings.postgres_admin_url else "embedded"

    def _target(self, location: str) -> AdminTarget:
        if location == "external":
            if not self.settings.postgres_admin_url:
                raise ServiceFailure(
                    "this service lives in an external PostgreSQL, but the platform runs "
                    "without --postgres-admin-url"
                )
            return AdminTarget.from_url(self.settings.postgres_admin_url)
        return self.cluster.ensure()

    def endpoint(self, record: ServiceRecord) -> Endpoint:
        """Where and as whom the service's apps connect."""
        if record.kind == ServiceKind.POSTGRES:
            host = self.host
            if record.location == "external":
                host = self._target("external").host
            return Endpoint(
                ServiceKind.POSTGRES,
                host,
                record.port,
                record.login,
                record.password,
                record.resource,
            )
        return Endpoint(ServiceKind.REDIS, self.host, record.port, "default", record.password)

    def check_room(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if not enough_room(free):
            raise ServiceFailure(
                f"the disk is full: {free >> 20} MB free in {self.root}; a service needs at "
                f"least {MIN_FREE_BYTES >> 20} MB"
            )

    # ── provisioning ────────────────────────────────────────────────────────────────────────

    def provision(self, record: ServiceRecord) -> int:
        """Create the database or start the server; returns the port apps connect to."""
        self.check_room()
        if record.kind == ServiceKind.POSTGRES:
            target = self._target(record.location)
            Databases(target).create(record.resource, record.password, record.connection_limit)
            return target.port
        for attempt in range(3):  # another platform may take a picked port before we bind it
            port = pick_port(self.host)
            try:
                self.redis(record, port=port).start()
                return port
            except ServiceFailure as exc:
                if "is taken" not in exc.message or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def redis(self, record: ServiceRecord, *, port: int | None = None) -> RedisServer:
        spec = RedisSpec(
            directory=self.root / "redis" / record.resource,
            host=self.host,
            port=port or record.port,
            password=record.password,
            admin_password=record.admin_password,
            maxmemory_mb=record.maxmemory_mb or self.settings.redis_maxmemory_mb,
            previous_passwords=tuple(password for _, password in record.previous),
        )
        return RedisServer(spec, self.account)

    def rotate(self, record: ServiceRecord, password: str, *, keep_previous: bool) -> ServiceRecord:
        """New credentials, valid at once; the current ones stay valid (as the previous ones)
        unless ``keep_previous`` is false, so running deployments keep working until the
        next rotation. Older credentials stop working now."""
        new = rotated(record, password, keep_previous=keep_previous)
        kept = set(new.logins()[1:])
        if record.kind == ServiceKind.POSTGRES:
            databases = Databases(self._target(record.location))
            databases.add_login(record.resource, new.login, password, record.connection_limit)
            for login in record.logins():
                if login not in kept:
                    databases.remove_login(record.resource, login)
            return new
        server = self.redis(new)
        server.set_passwords(password, server.spec.previous_passwords)
        server.write_config()
        return new

    def set_limits(self, record: ServiceRecord) -> None:
        if record.kind == ServiceKind.POSTGRES:
            Databases(self._target(record.location)).set_connection_limit(
                record.resource, record.logins(), record.connection_limit
            )
            return
        server = self.redis(record)
        server.set_maxmemory(record.maxmemory_mb or self.settings.redis_maxmemory_mb)
        server.write_config()

    def backup(self, record: ServiceRecord, *, when: datetime, tag: str = "") -> Path:
        """A pg_dump (custom format) or an RDB snapshot in ``{data_dir}/services/backups``."""
        self.check_room()
        self.backups.mkdir(parents=True, exist_ok=True)
        self.backups.chmod(0o700)
        dest = self.backups / backup_name(record.name, record.kind, when, tag)
        if record.kind == ServiceKind.POSTGRES:
            Databases(self._target(record.location)).dump(record.resource, dest)
        else:
            self.redis(record).save(dest)
        dest.chmod(0o600)
        return dest

    def restore(self, record: ServiceRecord, source: Path) -> None:
        if record.kind == ServiceKind.POSTGRES:
            Databases(self._target(record.location)).restore(record.resource, source)
        else:
            self.redis(record).load(source)

    def copy(self, source: ServiceRecord, dest: ServiceRecord, *, when: datetime) -> None:
        """Schema and data of ``source`` into ``dest`` (same kind), through a backup file."""
        path = self.backup(source, when=when, tag=f"copy-to-{dest.name}")
        try:
            self.restore(dest, path)
        finally:
            path.unlink(missing_ok=True)

    def remove(self, record: ServiceRecord, *, when: datetime) -> Path | None:
        """A final backup, then the database or server is gone; returns the backup's path.

        A server that cannot be reached for the final backup is still removed (its files stay
        in the data dir for Redis, the database is dropped for PostgreSQL only after a dump).
        """
        path = self.backup(record, when=when, tag="final")
        if record.kind == ServiceKind.POSTGRES:
            Databases(self._target(record.location)).drop(record.resource, record.logins())
        else:
            server = self.redis(record)
            server.stop()
            shutil.rmtree(server.spec.directory, ignore_errors=True)
        return path

    # ── the platform's start and stop ───────────────────────────────────────────────────────

    def start(self, records: Iterable[ServiceRecord]) -> list[str]:
        """Start the embedded cluster (if the data dir has one) and every Redis server that is
        not already running; returns the messages of those that failed (the rest still run)."""
        failures: list[str] = []
        records = list(records)
        if any(r.kind == ServiceKind.POSTGRES and r.location == "embedded" for r in records):
            try:
                self.cluster.ensure()
            except ServiceFailure as exc:
                failures.append(exc.message)
        for record in records:
            if record.kind != ServiceKind.REDIS:
                continue
            server = self.redis(record)
            if server.alive():
                continue
            server.kill()  # a stale pid file or a hung process
            try:
                server.start()
            except ServiceFailure as exc:
                failures.append(f"service {record.name}: {exc.message}")
        for message in failures:
            log.error("%s", message)
        return failures

    def stop(self, records: Iterable[ServiceRecord]) -> None:
        for record in records:
            if record.kind == ServiceKind.REDIS:
                self.redis(record).stop()
        if (self.root / "postgres" / "data" / "PG_VERSION").is_file():
            self.cluster.stop()
