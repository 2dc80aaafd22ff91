"""A real `phemeral serve` with backing services, and what the tests do to it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from control.serverkit import Server, tar_gz, unique, wait_done

from phemeral.services.postgres import find_binary

__all__ = ["Server", "deploy", "get", "stop_leftovers", "unique"]


def deploy(
    api: httpx.Client, project: str, files: dict[str, str], environment: str = "production"
) -> dict[str, Any]:
    response = api.post(
        f"/projects/{project}/deployments",
        files={"archive": ("app.tar.gz", tar_gz(files), "application/gzip")},
        data={"environment": environment},
    )
    assert response.status_code == 201, response.text
    done = wait_done(api, str(response.json()["id"]), timeout=600)
    assert done["status"] == "successful", (done["failure_reason"], _build_log(api, done))
    return done


def _build_log(api: httpx.Client, d: dict[str, Any]) -> str:
    lines = api.get(f"/deployments/{d['id']}/logs/build").json()["lines"]
    return "\n".join(line["message"] for line in lines[-30:])


def build_log(api: httpx.Client, deployment_id: str) -> str:
    lines = api.get(f"/deployments/{deployment_id}/logs/build", params={"limit": 1000}).json()
    return "\n".join(line["message"] for line in lines["lines"])


def get(server: Server, deployment_id: str, path: str = "/", timeout: float = 60) -> httpx.Response:
    """A request to the deployment through the platform's router; the router's own 503 (waking
    on a loaded machine, Retry-After) is retried a few times, an app's answer never."""
    host = f"{deployment_id}.phemeral.localhost"
    for _ in range(5):
        response = httpx.get(server.url + path, headers={"Host": host}, timeout=timeout)
        if response.status_code != 503 or "retry-after" not in response.headers:
            return response
        time.sleep(1)
    return response


def traversable(path: Path) -> None:
    """The database servers run as their own user: the test's temp dirs must let them pass."""
    for parent in path.parents:
        if parent != Path("/"):
            os.chmod(parent, os.stat(parent).st_mode | 0o001)


def stop_leftovers(data_dir: Path) -> None:
    """Whatever a killed platform left running in ``data_dir``: its Redis servers, its cluster."""
    for pidfile in (data_dir / "services" / "redis").glob("*/redis.pid"):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    cluster = data_dir / "services" / "postgres" / "data"
    if (cluster / "postmaster.pid").exists():
        pid = int((cluster / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)  # fast shutdown
        subprocess.run(["timeout", "30", "tail", f"--pid={pid}", "-f", "/dev/null"], check=False)
    _ = find_binary  # the binaries must exist for these tests at all
