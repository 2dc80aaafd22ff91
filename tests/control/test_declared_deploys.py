"""What a repository declares, deployed for real: the real control plane, builder and runtime.

Procfile precedence (custom > Procfile > autodetected, and a cleared custom command falls back to
the Procfile), a failing or stuck release command leaves the current deployment current, a
hypercorn app declared in a Procfile. (The release migrating Django against the platform's
PostgreSQL: tests/services/test_release_phase.py.)
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import select

from phemeral import deploys
from phemeral.deploys import Trigger
from phemeral.deploys.lifecycle import release_phase
from phemeral.deploys.plane import ControlPlane
from phemeral.models import TriggerKind
from phemeral.runtime.supervisor import Runtime
from phemeral.server import control_plane
from phemeral.settings import Settings
from phemeral.store.releases import release_from_json
from phemeral.store.schema import BuildLogRow, Deployment, Environment

from .serverkit import tar_gz

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLASK = {
    "requirements.txt": "flask\ngunicorn\n",
    "app.py": (
        "import os\nfrom flask import Flask\n\napp = Flask(__name__)\n\n\n@app.get('/')\n"
        "def index():\n    return {'started_by': os.environ.get('STARTED_BY', 'default')}\n"
    ),
}


@dataclass
class ListLog:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def write(self, stage: str, message: str) -> None:
        self.lines.append((stage, message))


async def deploy(cp: ControlPlane, project: str, files: dict[str, str], tmp: Path) -> str:
    assert cp.queue is not None
    archive = tmp / f"{secrets.token_hex(4)}.tar.gz"
    archive.write_bytes(tar_gz(files))
    trigger = Trigger(kind=TriggerKind.MANUAL, actor="test")
    d, _ = await asyncio.to_thread(
        deploys.deploy, cp, project, "production", trigger, archive=archive
    )
    await cp.queue.wait_idle()
    return d.id


def row(cp: ControlPlane, deployment_id: str) -> dict[str, object]:
    with cp.store.read() as s:
        d = s.get_one(Deployment, deployment_id)
        env = s.get_one(Environment, d.environment_id)
        lines = s.execute(
            select(BuildLogRow.stage, BuildLogRow.message)
            .where(BuildLogRow.deployment_id == deployment_id)
            .order_by(BuildLogRow.id)
        ).all()
        return {
            "status": d.status,
            "source": d.start_command_source,
            "command": d.start_command,
            "reason": d.failure_reason,
            "current": env.current_deployment_id,
            "log": [(stage, message) for stage, message in lines],
            "settings": d.settings,
        }


async def get(cp: ControlPlane, deployment_id: str, path: str = "/") -> httpx.Response:
    assert cp.runtime is not None
    upstream = await cp.runtime.ensure_running(deployment_id)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"http://{upstream.host}:{upstream.port}{path}")


def test_procfile_precedence_and_a_failing_release(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=8999)
    procfile = "web: STARTED_BY=procfile gunicorn app:app\n"

    async def scenario() -> None:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            await asyncio.to_thread(deploys.create_project, cp, "decl")
            # 1. autodetected: no Procfile, no custom command
            auto = await deploy(cp, "decl", FLASK, tmp_path)
            # 2. the Procfile wins over autodetection
            declared = await deploy(cp, "decl", {**FLASK, "Procfile": procfile}, tmp_path)
            # 3. a saved custom command wins over the Procfile
            custom_cmd = "STARTED_BY=custom gunicorn --bind 0.0.0.0:$PORT app:app"
            await asyncio.to_thread(
                deploys.update_project, cp, "decl", {"start_command": custom_cmd}
            )
            custom = await deploy(cp, "decl", {**FLASK, "Procfile": procfile}, tmp_path)
            # 4. cleared: back to the Procfile
            await asyncio.to_thread(deploys.update_project, cp, "decl", {"start_command": None})
            cleared = await deploy(cp, "decl", {**FLASK, "Procfile": procfile}, tmp_path)
            rows = {
                "auto": row(cp, auto),
                "declared": row(cp, declared),
                "custom": row(cp, custom),
                "cleared": row(cp, cleared),
            }
            for name, info in rows.items():
                assert info["status"] == "successful", (name, info["reason"])
            assert rows["auto"]["source"] == "autodetected"
            assert rows["declared"]["source"] == "procfile"
            assert rows["declared"]["command"] == (
                "STARTED_BY=procfile gunicorn --bind 0.0.0.0:$PORT app:app"
            )
            assert rows["custom"]["source"] == "custom"
            assert rows["custom"]["command"] == custom_cmd
            assert rows["cleared"]["source"] == "procfile"
            answers = {}
            for name, did in (("auto", auto), ("declared", declared), ("custom", custom)):
                answers[name] = (await get(cp, did)).json()["started_by"]
            answers["cleared"] = (await get(cp, cleared)).json()["started_by"]
            assert answers == {
                "auto": "default",
                "declared": "procfile",
                "custom": "custom",
                "cleared": "procfile",
            }
            custom_log = "\n".join(m for s, m in rows["custom"]["log"] if s == "detect")  # type: ignore[union-attr]
            assert "start command (custom, saved on the project, wins over Procfile:1" in custom_log
            declared_log = "\n".join(m for s, m in rows["declared"]["log"] if s == "detect")  # type: ignore[union-attr]
            assert "start command (procfile, declared in Procfile:1" in declared_log
            assert rows["declared"]["settings"]["start_command_source"] == "procfile"  # type: ignore[index]

            # A failing release: the deployment fails, the current one stays current.
            assert rows["cleared"]["current"] == cleared
            failing = {
                **FLASK,
                "Procfile": procfile + "release: echo migrating && echo boom >&2 && exit 3\n",
            }
            bad = await deploy(cp, "decl", failing, tmp_path)
            info = row(cp, bad)
            assert info["status"] == "failed"
            assert "exited with code 3" in str(info["reason"])
            assert info["current"] == cleared
            release_lines = [m for s, m in info["log"] if s == "release"]  # type: ignore[union-attr]
            assert "migrating" in release_lines and "boom" in release_lines
            assert not any(s == "boot" for s, _ in info["log"])  # type: ignore[union-attr]
            assert (await get(cp, cleared)).status_code == 200

            # A release that runs past its limit (phemeral.toml release_timeout) fails the same way
            slow = {
                **FLASK,
                "Procfile": procfile + "release: sleep 60\n",
                "phemeral.toml": "release_timeout = 1\n",
            }
            stuck = await deploy(cp, "decl", slow, tmp_path)
            info = row(cp, stuck)
            assert info["status"] == "failed"
            assert "ran past its 1 s limit" in str(info["reason"])
            assert info["current"] == cleared

    asyncio.run(scenario())


HYPERCORN = {
    "requirements.txt": "fastapi\nhypercorn\n",
    "main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get('/')\n"
    "def index():\n    return {'server': 'hypercorn'}\n\n\n@app.get('/healthz')\n"
    "def health():\n    print('health probe answered', flush=True)\n    return {'ok': True}\n",
    "Procfile": "web: hypercorn main:app --bind 0.0.0.0:${PORT:-8000} --workers 1\n",
    "phemeral.toml": 'health_check_path = "/healthz"\n',
}


def test_hypercorn_app_declared_in_a_procfile(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=8999)

    async def scenario() -> None:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            await asyncio.to_thread(deploys.create_project, cp, "hyper")
            did = await deploy(cp, "hyper", HYPERCORN, tmp_path)
            info = row(cp, did)
            assert info["status"] == "successful", "\n".join(f"{s}: {m}" for s, m in info["log"])  # type: ignore[union-attr]
            assert info["source"] == "procfile"
            assert info["command"] == HYPERCORN["Procfile"][5:].strip()
            boot = [m for stage, m in info["log"] if stage == "boot"]  # type: ignore[union-attr]
            assert "health probe answered" in boot  # the boot check asked phemeral.toml's path
            response = await get(cp, did)
            assert response.json() == {"server": "hypercorn"}
            assert response.headers["server"].startswith("hypercorn")

    asyncio.run(scenario())


@pytest.mark.root  # the writable throwaway app directory is an overlay mount
def test_release_commands_of_one_environment_never_overlap(tmp_path: Path) -> None:
    """Also: the release writes into a throwaway layer over the app directory (discarded)."""
    settings = Settings(data_dir=tmp_path / "data", port=8999, build_concurrency=2)
    release = "sleep 6 && echo released > marker.txt && cat marker.txt"
    app = {**FLASK, "Procfile": f"web: gunicorn app:app\nrelease: {release}\n"}

    async def scenario() -> None:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            assert cp.queue is not None
            await asyncio.to_thread(deploys.create_project, cp, "pair")
            ids = []
            for n in range(2):
                archive = tmp_path / f"pair-{n}.tar.gz"
                archive.write_bytes(tar_gz(app))
                trigger = Trigger(kind=TriggerKind.MANUAL, actor="test")
                d, _ = await asyncio.to_thread(
                    deploys.deploy, cp, "pair", "production", trigger, archive=archive
                )
                ids.append(d.id)
            await cp.queue.wait_idle()
            spans = []
            for did in ids:
                with cp.store.read() as s:
                    rows = s.execute(
                        select(BuildLogRow.timestamp, BuildLogRow.message)
                        .where(BuildLogRow.deployment_id == did, BuildLogRow.stage == "release")
                        .order_by(BuildLogRow.id)
                    ).all()
                start = next(t for t, m in rows if m.startswith("running the release command"))
                end = next(t for t, m in rows if m.startswith("release command finished"))
                spans.append((start, end))
                assert row(cp, did)["status"] == "successful"
                assert "released" in [m for _, m in rows]  # written, then read back
                src = cp.release_dir("pair", did) / "src"
                assert src.is_dir() and not (src / "marker.txt").exists()  # release unchanged
            (_, first_end), (second_start, _) = sorted(spans)
            assert first_end <= second_start, spans  # one after the other, never together

            # Deterministically: two release phases of one environment started together (the
            # built release, run twice); the second waits for the first.
            with cp.store.read() as s:
                data = s.get_one(Deployment, ids[0]).release
            assert data is not None
            release = release_from_json(data, {})
            logs = [ListLog(), ListLog()]
            job = SimpleNamespace(project="pair", environment="production")
            await asyncio.gather(
                *(
                    release_phase(cp, job, replace(release, deployment_id=f"{ids[0]}x{n}"), logs[n])  # type: ignore[arg-type]
                    for n in range(2)
                )
            )
            texts = [[m for _, m in log.lines] for log in logs]
            waits = [any(m.startswith("waiting for another release") for m in t) for t in texts]
            assert waits.count(True) == 1, texts
            assert all("released" in t for t in texts)

    asyncio.run(scenario())
