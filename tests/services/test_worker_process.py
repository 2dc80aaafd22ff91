"""A Celery worker declared in a Procfile consumes from the environment's Redis service; it runs
for the current deployment only and is swapped on promote (new one starts, old one stops)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .kit import Server, deploy, get, unique

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(900)]

CELERY_APP = {
    "requirements.txt": "flask\ngunicorn\ncelery[redis]>=5.3\n",
    "Procfile": "web: gunicorn --timeout 120 app:app\n"
    "worker: celery -A tasks worker --loglevel INFO --concurrency 1 --without-gossip\n",
    "tasks.py": """import os

from celery import Celery

app = Celery("tasks", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task
def whoami(n):
    return {"deployment": os.environ["PHEMERAL_DEPLOYMENT_ID"], "n": n * 2}
""",
    "app.py": """from flask import Flask

from tasks import whoami

app = Flask(__name__)


@app.get("/")
def index():
    return {"ok": True}


@app.get("/run/<int:n>")
def run(n):
    return whoami.delay(n).get(timeout=100)
""",
}


def run_task(server: Server, deployment_id: str, n: int) -> dict[str, Any]:
    """GET /run/n on the deployment: a task queued on Redis, answered by a worker."""
    response = get(server, deployment_id, f"/run/{n}", timeout=150)
    assert response.status_code == 200, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    return body


def processes(api: httpx.Client, deployment_id: str) -> dict[str, dict[str, Any]]:
    body = api.get(f"/deployments/{deployment_id}").json()
    return {p["name"]: p for p in body["processes"]}


def wait_state(api: httpx.Client, deployment_id: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes(api, deployment_id)["worker"]["state"] == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"worker of {deployment_id}: {processes(api, deployment_id)}")


def worker_lines(api: httpx.Client, deployment_id: str) -> list[str]:
    body = api.get(
        f"/deployments/{deployment_id}/logs/runtime", params={"limit": 1000, "order": "asc"}
    ).json()
    return [line["message"] for line in body["lines"] if line["instance"] == "worker"]


def eventually_logged(api: httpx.Client, deployment_id: str, text: str) -> bool:
    deadline = time.monotonic() + 90  # log lines reach the store in batches; celery boots slowly
    while time.monotonic() < deadline:
        if any(text in line for line in worker_lines(api, deployment_id)):
            return True
        time.sleep(0.5)
    return False


def test_celery_worker_consumes_from_redis_and_is_swapped_on_promote(
    server: Server, api: httpx.Client
) -> None:
    project = unique("cel")
    api.post("/projects", json={"name": project})
    response = api.post("/services", json={"kind": "redis", "project": project})
    assert response.status_code == 201, response.text

    first = deploy(api, project, CELERY_APP)
    a = str(first["id"])
    assert first["processes"][0]["name"] == "worker"
    wait_state(api, a, "running")
    assert run_task(server, a, 21) == {"deployment": a, "n": 42}
    assert eventually_logged(api, a, "ready")  # its output: runtime log lines tagged "worker"

    second = deploy(api, project, CELERY_APP)  # becomes current: the workers swap
    b = str(second["id"])
    wait_state(api, b, "running")
    wait_state(api, a, "stopped")
    assert eventually_logged(api, b, "ready")  # connected to Redis (slow on a loaded machine)
    # the old deployment's web process now hands its tasks to the new worker
    assert run_task(server, a, 1) == {"deployment": b, "n": 2}

    # rollback: the first deployment's worker runs again, the second's stops
    response = api.post(f"/deployments/{a}/promote", json={})
    assert response.status_code == 200, response.text
    wait_state(api, a, "running")
    wait_state(api, b, "stopped")
    assert run_task(server, b, 2) == {"deployment": a, "n": 4}
    assert processes(api, a)["worker"]["restarts"] == 0

    # A platform killed with -9 and started again: the old worker is replaced, not doubled.
    before = celery_pids(a)
    assert before
    server.kill(signal.SIGKILL)
    server.start()
    with server.client() as fresh:
        wait_state(fresh, a, "running")
        assert run_task(server, a, 3) == {"deployment": a, "n": 6}
        after = celery_pids(a)
        assert after and not (after & before), (before, after)
        assert len(after) == len(before)
        assert not celery_pids(b)


def celery_pids(deployment_id: str) -> set[int]:
    """Host processes running the celery of this deployment's release."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (
            f"/releases/{deployment_id}/" in cmdline
            and "celery" in cmdline
            and "bwrap" not in cmdline
        ):
            found.add(int(entry.name))
    return found
