"""Redis: one redis-server process per service, run as the service account, daemonised (it
outlives a crash of the platform, which finds it again by its pid file), with its own port,
password, `maxmemory` and persistence (AOF every second + RDB snapshots) in its own directory.

Apps log in as ``default``; the platform administers through its ``phemeral`` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from phemeral.errors import ServiceFailure
from phemeral.services.account import Account, make_traversable
from phemeral.services.resp import RedisError, call
from phemeral.services.spec import redis_config

ADMIN_USER = "phemeral"
START_TIMEOUT = 15.0


def find_redis() -> str:
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ServiceFailure(
        "redis-server is not installed: run scripts/bootstrap (Debian package redis-server)"
    )


@dataclass(frozen=True)
class RedisSpec:
    directory: Path
    host: str
    port: int
    password: str
    admin_password: str
    maxmemory_mb: int
    previous_passwords: tuple[str, ...] = ()  # still accepted after a rotation


class RedisServer:
    """The redis-server of one service."""

    def __init__(self, spec: RedisSpec, account: Account) -> None:
        self.spec = spec
        self.account = account

    @property
    def pidfile(self) -> Path:
        return self.spec.directory / "redis.pid"

    @property
    def rdb(self) -> Path:
        return self.spec.directory / "dump.rdb"

    def admin(self, *command: str, timeout: float = 30.0) -> object:
        s = self.spec
        try:
            return call(s.host, s.port, ADMIN_USER, s.admin_password, *command, timeout=timeout)
        except RedisError:
            raise
        except OSError as exc:
            raise ServiceFailure(f"Redis on port {s.port} does not answer: {exc}") from exc

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if comm.startswith("redis-server") else None

    def alive(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return self.admin("PING", timeout=2) == "PONG"
        except ServiceFailure:
            return False

    def write_config(self) -> None:
        s = self.spec
        self.account.owns(s.directory)
        conf = s.directory / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                redis_config(
                    host=s.host,
                    port=s.port,
                    directory=str(s.directory),
                    password=s.password,
                    admin_password=s.admin_password,
                    maxmemory_mb=s.maxmemory_mb,
                    previous_passwords=s.previous_passwords,
                )
            )
        if os.geteuid() == 0:
            os.chown(conf, self.account.uid, self.account.gid)

    def start(self, *overrides: str) -> None:
        """Write the configuration and start the server; wait until it answers."""
        self.write_config()
        make_traversable(self.spec.directory)
        log = self.spec.directory / "redis.log"
        offset = log.stat().st_size if log.exists() else 0
        result = subprocess.run(  # type: ignore[call-overload]
            [find_redis(), str(self.spec.directory / "redis.conf"), *overrides],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.spec.directory,
            stdin=subprocess.DEVNULL,
            **self.account.run_kwargs(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while result.returncode == 0 and time.monotonic() < deadline:
            if self.alive():
                return
            if _failed(log, offset):  # the daemon said why and exited: no need to wait it out
                break
            time.sleep(0.02)
        text = (result.stderr or "") + (result.stdout or "")
        with contextlib.suppress(OSError), log.open("rb") as f:
            f.seek(offset)
            text += "\n".join(f.read().decode(errors="replace").splitlines()[-5:])
        if "No space left on device" in text:
            reason = "the disk is full (No space left on device)"
        elif "Address already in use" in text:
            reason = f"port {self.spec.port} is taken by another process"
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            reason = "; ".join(lines[-3:]) or "it did not answer"
        self.kill()
        raise ServiceFailure(f"Redis on port {self.spec.port} failed to start: {reason}")

    def stop(self, timeout: float = 20.0) -> None:
        """Shut down, saving; killed if it does not go in time."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ServiceFailure, ConnectionError):
            self.admin("SHUTDOWN", "SAVE", timeout=timeout)
        if not _gone(pid, timeout):
            self.kill()

    def kill(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _gone(pid, 5)

    def save(self, dest: Path) -> None:
        """A consistent RDB snapshot copied to ``dest``."""
        self.admin("SAVE", timeout=120)
        shutil.copyfile(self.rdb, dest)

    def load(self, source: Path) -> None:
        """Replace the data with an RDB file: stop, swap, start from the RDB, re-enable the AOF."""
        self.stop()
        shutil.rmtree(self.spec.directory / "appendonlydir", ignore_errors=True)
        shutil.copyfile(source, self.rdb)
        if os.geteuid() == 0:
            os.chown(self.rdb, self.account.uid, self.account.gid)
        self.start("--appendonly", "no")
        self.admin("CONFIG", "SET", "appendonly", "yes")  # rewrites the AOF from memory
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = self.admin("INFO", "persistence")
            text = info.decode() if isinstance(info, bytes) else str(info)
            done = ("aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0", "aof_enabled:1")
            if all(flag in text for flag in done):
                return
            time.sleep(0.05)
        raise ServiceFailure(f"Redis on port {self.spec.port} did not finish rewriting its AOF")

    def set_passwords(self, password: str, previous: tuple[str, ...]) -> None:
        """Exactly these passwords log in as ``default`` from now on."""
        keep = [f">{p}" for p in (password, *previous)]
        self.admin("ACL", "SETUSER", "default", "resetpass", *keep)

    def set_maxmemory(self, mb: int) -> None:
        self.admin("CONFIG", "SET", "maxmemory", f"{mb}mb")


FATAL_MARKS = ("Could not create server TCP listening socket", "Fatal error", "Failed opening")


def _failed(log: Path, offset: int) -> bool:
    """This start's part of the log (from ``offset``) says the server gave up."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(mark in text for mark in FATAL_MARKS)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
            if state == "Z":
                return True
        time.sleep(0.02)
    return False
