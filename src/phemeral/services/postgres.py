"""PostgreSQL: the embedded cluster (initdb into the data dir, started and stopped with the
platform) and the administration of one database per service, in it or in an external server.

The embedded cluster runs as the unprivileged service account, listens on one TCP port (picked
once, kept across restarts, never the standard 5432), has no Unix socket, and its pg_hba lets
every role reach only the database of its own name, by SCRAM password.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from phemeral.errors import ConfigError, ServiceFailure
from phemeral.services.account import Account, make_traversable
from phemeral.services.spec import new_password, pg_config, pg_hba

ADMIN_USER = "phemeral"
PORT_RANGE = (15433, 19999)  # never 5432; stable per data dir once picked
CONNECT_TIMEOUT = 5


def find_binary(name: str) -> str:
    """``name`` from the newest ``/usr/lib/postgresql/*/bin``, else from PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if (folder / name).is_file():
            return str(folder / name)
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and (Path(entry) / name).is_file():
            return str(Path(entry) / name)
    raise ServiceFailure(
        f"PostgreSQL's {name} is not installed: run scripts/bootstrap (Debian package "
        "postgresql), or pass --postgres-admin-url to use an existing server"
    )


@dataclass(frozen=True)
class AdminTarget:
    """How the platform reaches a PostgreSQL server as its administrator."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    embedded: bool

    @classmethod
    def from_url(cls, url: str) -> AdminTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ConfigError(
                "postgres admin URL must look like postgresql://user:pass@host:port/db"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=unquote(parts.path.lstrip("/")) or "postgres",
            embedded=False,
        )

    def connect(self, dbname: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or None,
                dbname=dbname or self.dbname,
                connect_timeout=CONNECT_TIMEOUT,
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            where = (
                "the embedded PostgreSQL"
                if self.embedded
                else f"PostgreSQL at {self.host}:{self.port}"
            )
            raise ServiceFailure(f"cannot reach {where}: {_first_line(exc)}") from exc

    def client_env(self) -> dict[str, str]:
        """Environment for pg_dump / pg_restore: the password never goes on a command line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGCONNECT_TIMEOUT="5")
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class EmbeddedCluster:
    """The platform's own cluster in ``root`` (``{data_dir}/services/postgres``)."""

    def __init__(self, root: Path, host: str, account: Account) -> None:
        self.root = root
        self.host = host
        self.account = account
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port_file = root / "port"
        self.password_file = root.parent / "postgres-admin-password"  # root-only, 0600
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def ensure(self) -> AdminTarget:
        """Initialise the cluster if needed, start it if it is not running; its admin target."""
        with self._lock:
            if not self.exists():
                self._init()
            if self.running() and self.listening_on() != (self.host, self.port()):
                self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60", check=False)  # moved
            if not self.running():
                make_traversable(self.root)
                self._start()
            return self.target()

    def target(self) -> AdminTarget:
        return AdminTarget(
            host=self.host,
            port=self.port(),
            user=ADMIN_USER,
            password=self.password_file.read_text().strip(),
            dbname="postgres",
            embedded=True,
        )

    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def running(self) -> bool:
        """The postmaster of ``postmaster.pid`` is alive (checked as root: no pg_ctl needed)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            return False
        return comm in ("postgres", "postmaster")

    def listening_on(self) -> tuple[str, int] | None:
        """The address and port the running postmaster recorded in ``postmaster.pid``."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            return lines[5].strip(), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        with self._lock:
            if self.exists() and self.running():
                self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60", check=False)

    def _init(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        make_traversable(self.root)
        self.account.owns(self.root)
        password = new_password()
        pwfile = self.root / "initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, self.account.uid, self.account.gid)
        try:
            self._run(
                [
                    find_binary("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    ADMIN_USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                    "--no-sync",  # a fresh, empty cluster: nothing to lose; 1-2 s faster
                ],
                what="initialise the embedded PostgreSQL cluster",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.data / "pg_hba.conf").write_text(pg_hba(ADMIN_USER))
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'phemeral.conf'\n")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        self.port_file.write_text(f"{_pick_port(self.host)}\n")
        self._start()
        with self.target().connect() as conn:  # nobody but the admin reaches the built-in ones
            for db in ("postgres", "template1"):
                conn.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db))
                )

    def _start(self) -> None:
        port = self.port()
        if not _port_free(self.host, port):
            raise ServiceFailure(
                f"the embedded PostgreSQL cannot start: port {port} on {self.host} is taken by "
                "another process"
            )
        conf = self.data / "phemeral.conf"
        conf.write_text(pg_config(host=self.host, port=port))
        (self.data / "pg_hba.conf").write_text(pg_hba(ADMIN_USER))
        if os.geteuid() == 0:
            for path in (conf, self.data / "pg_hba.conf"):
                os.chown(path, self.account.uid, self.account.gid)
        self._pg_ctl(
            "start", "-w", "-t", "60", "-l", str(self.log), what="start the embedded PostgreSQL"
        )

    def _pg_ctl(
        self, *args: str, check: bool = True, what: str = ""
    ) -> subprocess.CompletedProcess[str]:
        argv = [find_binary("pg_ctl"), "-D", str(self.data), *args]
        if check:
            return self._run(argv, what=what)
        done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            argv, capture_output=True, text=True, check=False, **self.account.run_kwargs()
        )
        return done

    def _run(self, argv: list[str], *, what: str) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            argv,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            **self.account.run_kwargs(),
        )
        if result.returncode != 0:
            raise ServiceFailure(f"cannot {what}: {self._explain(result)}")
        return result

    def _explain(self, result: subprocess.CompletedProcess[str]) -> str:
        text = (result.stderr or "") + (result.stdout or "")
        with contextlib.suppress(OSError):
            text += "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-5:])
        if "No space left on device" in text:
            return "the disk is full (No space left on device)"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"FATAL|ERROR|error|could not", ln)]
        return "; ".join((errors or lines)[-3:]) or f"exit status {result.returncode}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_port(host: str) -> int:
    for _ in range(200):
        port = random.randint(*PORT_RANGE)  # noqa: S311 - not a secret
        if _port_free(host, port):
            return port
    raise ServiceFailure(f"no free port for a service on {host} in {PORT_RANGE[0]}–{PORT_RANGE[1]}")


pick_port = _pick_port


class Databases:
    """One database per service, owned by its own role, on the server ``target`` reaches."""

    def __init__(self, target: AdminTarget) -> None:
        self.target = target

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with self.target.connect() as conn:
            yield conn

    def create(self, ident: str, password: str, connection_limit: int | None) -> None:
        role = sql.Identifier(ident)
        limit = sql.Literal(-1 if connection_limit is None else connection_limit)
        try:
            with self._admin() as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s UNION ALL "
                    "SELECT 1 FROM pg_roles WHERE rolname = %s",
                    (ident, ident),
                ).fetchone()
                if exists:
                    raise ServiceFailure(f"database or role {ident} already exists on the server")
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {}").format(
                        role, sql.Literal(password), limit
                    )
                )
                superuser = conn.execute(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
                if not (superuser and superuser[0]):
                    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} CONNECTION LIMIT {}").format(
                        role, role, limit
                    )
                )
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
                conn.execute(
                    sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(role, role)
                )
        except psycopg.Error as exc:
            raise ServiceFailure(f"cannot create database {ident}: {_first_line(exc)}") from exc

    def add_login(
        self, ident: str, login: str, password: str, connection_limit: int | None
    ) -> None:
        """One more role that logs in to the database and acts as its owner (``SET role``), so
        what it creates belongs to the database's role and survives the login's removal."""
        owner, name = sql.Identifier(ident), sql.Identifier(login)
        limit = sql.Literal(-1 if connection_limit is None else connection_limit)
        try:
            with self._admin() as conn:
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {} IN ROLE {}"
                    ).format(name, sql.Literal(password), limit, owner)
                )
                conn.execute(
                    sql.SQL("ALTER ROLE {} SET role = {}").format(name, sql.Literal(ident))
                )
        except psycopg.Error as exc:
            raise ServiceFailure(f"cannot add a login to {ident}: {_first_line(exc)}") from exc

    def remove_login(self, ident: str, login: str) -> None:
        """The login no longer works; its sessions end. The database's own role stays (it owns
        the data) but cannot log in any more."""
        name = sql.Identifier(login)
        try:
            with self._admin() as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (login,),
                )
                if login == ident:
                    conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(name))
                    return
            with self.target.connect(ident) as conn:
                conn.execute(
                    sql.SQL("REASSIGN OWNED BY {} TO {}").format(name, sql.Identifier(ident))
                )
                conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
            with self._admin() as conn:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))
        except psycopg.Error as exc:
            raise ServiceFailure(f"cannot remove login {login}: {_first_line(exc)}") from exc

    def set_connection_limit(self, ident: str, logins: list[str], limit: int | None) -> None:
        value = sql.Literal(-1 if limit is None else limit)
        name = sql.Identifier(ident)
        for login in dict.fromkeys([ident, *logins]):
            role = sql.Identifier(login)
            self._alter(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(role, value), ident)
        self._alter(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(name, value), ident)

    def _alter(self, statement: sql.Composed, ident: str) -> None:
        try:
            with self._admin() as conn:
                conn.execute(statement)
        except psycopg.Error as exc:
            raise ServiceFailure(f"cannot change {ident}: {_first_line(exc)}") from exc

    def drop(self, ident: str, logins: list[str]) -> None:
        name = sql.Identifier(ident)
        try:
            with self._admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                for login in [*(x for x in logins if x != ident), ident]:
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
        except psycopg.Error as exc:
            raise ServiceFailure(f"cannot drop database {ident}: {_first_line(exc)}") from exc

    def dump(self, ident: str, dest: Path) -> None:
        """A custom-format ``pg_dump`` of the database into ``dest``."""
        result = subprocess.run(
            [
                find_binary("pg_dump"),
                "-Fc",
                "--no-owner",
                "--no-privileges",
                "-d",
                ident,
                "-f",
                str(dest),
            ],
            env=self.target.client_env(),
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            dest.unlink(missing_ok=True)
            raise ServiceFailure(f"pg_dump of {ident} failed: {_tool_error(result.stderr)}")

    def restore(self, ident: str, source: Path) -> None:
        """Replace the contents with a ``pg_dump -Fc`` file (objects owned by the role)."""
        result = subprocess.run(
            [
                find_binary("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                f"--role={ident}",
                "--exit-on-error",
                "-d",
                ident,
                str(source),
            ],
            env=self.target.client_env(),
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise ServiceFailure(f"pg_restore into {ident} failed: {_tool_error(result.stderr)}")


def _tool_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if any("No space left on device" in ln for ln in lines):
        return "the disk is full (No space left on device)"
    return "; ".join(lines[-3:]) or "unknown error"
