"""At run time an app sees its deployment's variable snapshot plus PORT and Phemeral's own.

In-process: the real control plane with the real builder and the real runtime.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from phemeral import deploys
from phemeral.deploys import Trigger
from phemeral.models import TriggerKind
from phemeral.runtime.supervisor import Runtime
from phemeral.server import control_plane
from phemeral.settings import Settings

from .serverkit import tar_gz

pytestmark = pytest.mark.slow

APP = {
    "requirements.txt": "fastapi\nuvicorn\n",
    "main.py": (
        "import os\nfrom fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get('/')\n"
        "def env():\n    return {k: v for k, v in os.environ.items()\n"
        "            if k.startswith(('PHEMERAL_', 'COLOUR', 'API_KEY')) or k == 'PORT'}\n"
    ),
}


def test_app_sees_its_snapshot_and_platform_variables(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=8999)

    async def scenario() -> tuple[dict[str, str], dict[str, str], list[str]]:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            assert cp.queue is not None and cp.runtime is not None
            await asyncio.to_thread(deploys.create_project, cp, "envy")
            await asyncio.to_thread(
                deploys.set_variables, cp, "envy", "production", {"COLOUR": "blue"}, secret=False
            )
            await asyncio.to_thread(
                deploys.set_variables, cp, "envy", "production", {"API_KEY": "k1"}, secret=True
            )
            ids = []
            for colour in ("blue", "green"):
                if colour == "green":
                    await asyncio.to_thread(
                        deploys.set_variables,
                        cp,
                        "envy",
                        "production",
                        {"COLOUR": colour},
                        secret=False,
                    )
                archive = tmp_path / f"{colour}.tar.gz"
                archive.write_bytes(tar_gz(APP))
                trigger = Trigger(kind=TriggerKind.MANUAL, actor="test")
                d, _ = await asyncio.to_thread(
                    deploys.deploy, cp, "envy", "production", trigger, archive=archive
                )
                ids.append(d.id)
                await cp.queue.wait_idle()
            seen = []
            for deployment_id in ids:
                upstream = await cp.runtime.ensure_running(deployment_id)
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://{upstream.host}:{upstream.port}/")
                seen.append(response.json())
            return seen[0], seen[1], ids

    first, second, ids = asyncio.run(scenario())
    assert first["COLOUR"] == "blue" and second["COLOUR"] == "green"  # each its own snapshot
    assert first["API_KEY"] == "k1"  # secrets reach the app, decrypted
    assert first["PHEMERAL_DEPLOYMENT_ID"] == ids[0]
    assert first["PHEMERAL_ENVIRONMENT"] == "production"
    assert first["PHEMERAL_URL"] == f"http://{ids[0]}.phemeral.localhost:8999"
    assert "http://envy-production.phemeral.localhost:8999" in first["PHEMERAL_ENVIRONMENT_URLS"]
    assert first["PORT"].isdigit()

    async def after_restart() -> dict[str, str]:
        async with control_plane(settings, runtime_factory=Runtime) as cp:
            assert cp.runtime is not None
            upstream = await cp.runtime.ensure_running(ids[0])  # re-registered from the DB
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://{upstream.host}:{upstream.port}/")
            body: dict[str, str] = response.json()
            return body

    again = asyncio.run(after_restart())
    assert again.pop("PORT").isdigit()
    assert again == {k: v for k, v in first.items() if k != "PORT"}
