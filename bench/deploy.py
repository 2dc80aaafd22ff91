"""Push → live for the FastAPI example: from the start of `phemeral deploy` to the first 200.

    .venv/bin/python bench/deploy.py [--example examples/fastapi-uv] [--warm-runs 3]

A platform child process runs what `phemeral serve` runs (control plane + builder) with the
runtime and the router attached (the router on its own port, forwarding control-plane hosts to
the API). This process times `phemeral deploy <example>` as a user runs it (a real CLI process:
pack, upload, build with live log) and then polls the deployment's URL through the router until
it answers 200. The first deploy runs against an empty data dir (cold uv cache: every wheel is
downloaded); the next ones redeploy the same, unchanged project (warm cache).
Target: warm ≤ 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BASE = "deploy.bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- platform side (a child process) ----------------------------------------------------------


async def platform(data_dir: Path, api_port: int, router_port: int) -> None:
    from phemeral.deploys import publish
    from phemeral.models import RoutingSnapshot, Upstream
    from phemeral.router.server import serve_router
    from phemeral.runtime.supervisor import Runtime
    from phemeral.server import control_plane, serve_api
    from phemeral.settings import load_settings

    settings = load_settings({}, {"data_dir": data_dir, "port": api_port, "base_domain": BASE})
    async with control_plane(settings, runtime_factory=Runtime) as cp:
        assert cp.runtime is not None
        router = await serve_router(
            host="127.0.0.1",
            port=router_port,
            snapshot=RoutingSnapshot(BASE, {}, {}),
            backends=cp.runtime,  # type: ignore[arg-type]
            control_plane=Upstream("127.0.0.1", api_port),
            log_sink=cp.logs,
        )
        cp.listeners.append(router.update)
        await asyncio.to_thread(publish, cp)
        try:
            await serve_api(cp)
        finally:
            await router.close()


# -- client side ------------------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the platform process exited; see its log")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the platform did not answer within 60 s")


def deploy_once(example: Path, api: str, data_dir: Path, router_port: int) -> dict[str, Any]:
    started = time.perf_counter()
    wall_start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "phemeral", "deploy", str(example), "--project", "bench",
         "--json", "--url", api, "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    deployed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{result.stdout}\n{result.stderr}")
    body = json.loads(result.stdout)
    host = f"{body['id']}.{BASE}"
    live = None
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = client.get(f"http://127.0.0.1:{router_port}/", headers={"Host": host})
                if answer.status_code == 200:
                    live = time.perf_counter() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    if live is None:
        raise SystemExit(f"{host} never answered 200 through the router")
    build_log = httpx.get(
        f"{api}/api/deployments/{body['id']}/logs/build",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"},
    ).json()["lines"]
    cache = next((ln["message"] for ln in build_log if ln["message"].startswith("cache ")), "?")
    stamps: dict[str, float] = {}
    for line in build_log:
        when = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
        stamps.setdefault(line["stage"], when)
        stamps[line["stage"] + "_end"] = when
    first = min(stamps.values())
    stages = " ".join(
        f"{stage}={stamps[stage + '_end'] - stamps[stage]:.2f}"
        for stage in stamps
        if not stage.endswith("_end")
    )
    return {
        "deploy_s": deployed,
        "live_s": live,
        "cache": cache[:60],
        "stages": f"queued→first line {first - wall_start:.2f} s; {stages}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=ROOT / "examples" / "fastapi-uv")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--platform", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.platform:
        data_dir, api_port, router_port = args.platform
        asyncio.run(platform(Path(data_dir), int(api_port), int(router_port)))
        return
    with tempfile.TemporaryDirectory(prefix="phemeral-deploy-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        api_port, router_port = free_port(), free_port()
        log = (Path(tmp) / "platform.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--platform",
                str(data_dir),
                str(api_port),
                str(router_port),
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "PHEMERAL_LOG_LEVEL": "warning"},
        )
        api = f"http://127.0.0.1:{api_port}"
        try:
            wait_ready(api, proc)
            cold = deploy_once(args.example, api, data_dir, router_port)
            warm = [
                deploy_once(args.example, api, data_dir, router_port) for _ in range(args.warm_runs)
            ]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    name = args.example.name
    print(f"push → live, {name} (phemeral deploy start → first 200 through the router)")
    for label, run in [("cold", cold), *((f"warm #{i}", r) for i, r in enumerate(warm, 1))]:
        print(
            f"  {label:8} deploy {run['deploy_s']:.2f} s, live {run['live_s']:.2f} s"
            f"  [{run['cache']}]"
        )
        print(f"           stages (s): {run['stages']}")
    if warm:
        median = statistics.median(r["live_s"] for r in warm)
        verdict = "meets" if median <= 3.0 else "misses"
        print(f"  warm median live {median:.2f} s ({verdict} the ≤ 3 s target)")


if __name__ == "__main__":
    main()
