"""Helpers to run a real `phemeral serve` and talk to it over HTTP."""

from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One running `phemeral serve`; `api` carries the admin token."""

    data_dir: Path
    database_url: str | None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self) -> Server:
        args = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(self.data_dir)]
        args += ["--port", str(self.port)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        args += self.extra_args
        env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning", **self.extra_env}
        log = (self.data_dir.parent / f"server-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log.name}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not answer within 60 s")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url + "/api", headers=headers, timeout=60)


def unique(prefix: str = "p") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def tar_gz(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FASTAPI_APP = {
    "requirements.txt": "fastapi\nuvicorn\n",
    "main.py": 'from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get("/")\ndef root():\n'
    '    return {"ok": True}\n',
}
NOT_A_PROJECT = {"notes.txt": "nothing to build here\n"}


def upload(
    api: httpx.Client, project: str, files: dict[str, str], **form: str
) -> dict[str, object]:
    response = api.post(
        f"/projects/{project}/deployments",
        files={"archive": ("app.tar.gz", tar_gz(files), "application/gzip")},
        data=form,
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def wait_done(api: httpx.Client, deployment_id: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, object] = api.get(f"/deployments/{deployment_id}").json()
        if body["status"] != "building":
            return body
        time.sleep(0.3)
    raise AssertionError(f"deployment {deployment_id} still building after {timeout} s")


def database_uri(server: Server) -> str:
    return server.database_url or f"sqlite:///{server.data_dir / 'phemeral.db'}"
