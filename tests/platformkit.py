"""One way for every suite to run a real `phemeral serve` and talk to it.

`Platform` starts the real command in a subprocess with a clean environment (no ``PHEMERAL_*``
from the developer's shell, so a "SQLite" test server never reaches someone's database), waits
for ``/api/health``, and stops it the way a person does (Ctrl-C, i.e. SIGINT; SIGKILL after
30 s). A server that exits or never becomes healthy fails the test with its log.

Also here: `free_port`; `pg_database` (a fresh PostgreSQL database, dropped afterwards);
`init_repo` / `commit` / `git` (real git repositories); `tar_gz` / `upload` / `wait_done` (a
deployment over the API). Fixtures built on these live in ``tests/conftest.py``
(`platform_factory`).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
STOP_SIGNAL = signal.SIGINT  # Ctrl-C: the server stops its app instances on the way out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any ``PHEMERAL_*``, quiet logs, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHEMERAL_")}
    env["PHEMERAL_LOG_LEVEL"] = "warning"
    env["PHEMERAL_SWAP_FILE_MB"] = "0"  # no test platform turns on a swap file of its own
    env.update(extra or {})
    return env


@contextlib.contextmanager
def pg_database(prefix: str = "phemeral_test_") -> Iterator[str]:
    """A PostgreSQL database of its own (SQLAlchemy URL), dropped with its connections after."""
    import psycopg

    name = prefix + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PlatformFailed(AssertionError):
    """The server exited or never became healthy; the message ends with its log."""


@dataclass
class Platform:
    """One `phemeral serve` on 127.0.0.1:``port`` with its own data dir."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """What people type: the base domain (``*.localhost`` resolves to 127.0.0.1)."""
        return f"http://phemeral.localhost:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-serve-{self.port}.log"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(self.data_dir)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.database_url:
            argv += ["--database-url", self.database_url]
        return argv + list(self.args)

    def start(self, timeout: float = 120) -> Platform:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_environ(self.env),
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PlatformFailed(
                    f"phemeral serve exited with {self.proc.returncode}" + self.tail()
                )
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PlatformFailed(
                    f"phemeral serve did not answer in {timeout:g} s" + self.tail()
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """Ctrl-C, as a person stops it; SIGKILL if it has not exited after ``timeout``."""
        self.kill(STOP_SIGNAL, timeout=timeout)

    def kill(self, sig: int = STOP_SIGNAL, timeout: float = 30) -> None:
        """Send ``sig`` (SIGKILL for a crash) and wait for the process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- server log (last lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    def client(self, token: str | None = None) -> httpx.Client:
        """The API (``/api``) with the admin token."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url + "/api", headers=headers, timeout=60)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """The ``phemeral`` command line against this server."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "phemeral",
                *args,
                "--url",
                self.url,
                "--data-dir",
                str(self.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=clean_environ(),
        )


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Octo Cat",
    "GIT_AUTHOR_EMAIL": "octo@example.com",
    "GIT_COMMITTER_NAME": "Octo Cat",
    "GIT_COMMITTER_EMAIL": "octo@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and no user or system config; its stdout."""
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return result.stdout.strip()


def init_repo(path: Path, branch: str = "main") -> Path:
    """A real git repository at ``path`` (created), on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return path


def commit(repo: Path, files: Mapping[str, str], message: str) -> str:
    """Write ``files`` and commit them; returns the new commit SHA."""
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def tar_gz(files: Mapping[str, str]) -> bytes:
    """A source archive as `phemeral deploy` uploads it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(
    api: httpx.Client, project: str, files: Mapping[str, str] | bytes, **form: str
) -> dict[str, Any]:
    """A deployment of ``files`` (or a ready archive) to ``project``; the 201 answer."""
    archive = files if isinstance(files, bytes) else tar_gz(files)
    response = api.post(
        f"/projects/{project}/deployments",
        files={"archive": ("app.tar.gz", archive, "application/gzip")},
        data=form,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_done(api: httpx.Client, deployment_id: str, timeout: float = 180) -> dict[str, Any]:
    """The deployment once it is no longer `building`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/deployments/{deployment_id}").json()
        if body["status"] != "building":
            return body
        time.sleep(0.3)
    raise AssertionError(f"deployment {deployment_id} still building after {timeout} s")
