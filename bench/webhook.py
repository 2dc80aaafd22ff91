"""GitHub webhook receiver: signature cost, and delivery → answer latency on a real server.

    .venv/bin/python bench/webhook.py [--projects 100] [--deliveries 200]

Prints (1) the HMAC check per body size; (2) p50/p95/max of the HTTP answer for pushes to an
unmapped branch (every project's secret is tried, nothing is stored) and for pushes that create
a deployment (stored in one transaction, build queued), with 1 project and with --projects
projects. Target: p95 far below GitHub's 10 s delivery timeout (aim: < 100 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from phemeral.github.signature import sign, signature_matches


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_signature() -> None:
    print("signature check (HMAC-SHA256 + constant-time compare), per call:")
    for size in (10 * 1024, 1024 * 1024, 25 * 1024 * 1024):
        body = os.urandom(size)
        header = sign("secret", body)
        runs = 200 if size < 2**20 else 10
        start = time.perf_counter()
        for _ in range(runs):
            assert signature_matches("secret", body, header)
        per = (time.perf_counter() - start) / runs * 1000
        print(f"  {size / 1024:>8.0f} KiB body: {per:8.3f} ms")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _payload(branch: str, after: str, repo: str) -> bytes:
    return json.dumps(
        {
            "ref": f"refs/heads/{branch}",
            "before": "0" * 40,
            "after": after,
            "repository": {"full_name": "octo/bench", "clone_url": repo, "pushed_at": 1},
            "pusher": {"name": "bench"},
            "head_commit": {"id": after, "message": "bench"},
        }
    ).encode()


def _deliver(client: httpx.Client, url: str, secret: str, body: bytes) -> tuple[float, int]:
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
    }
    start = time.perf_counter()
    response = client.post(url, content=body, headers=headers)
    return (time.perf_counter() - start) * 1000, response.status_code


def _report(label: str, samples: list[tuple[float, int]], expected: int) -> None:
    times = [t for t, _ in samples]
    bad = sum(1 for _, status in samples if status != expected)
    print(
        f"  {label:<44} n={len(times):<4} p50 {statistics.median(times):7.2f} ms"
        f"  p95 {_pct(times, 0.95):7.2f} ms  max {max(times):7.2f} ms"
        + (f"  ({bad} answers not {expected})" if bad else "")
    )


def bench_server(projects: int, deliveries: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="phemeral-bench-webhook-"))
    root.chmod(0o755)
    repo = root / "repo"
    repo.mkdir()
    port = _free_port()
    argv = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(root / "data")]
    argv += ["--port", str(port), "--allow-local-repos"]
    env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning", "PHEMERAL_BUILD_CONCURRENCY": "1"}
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit((root / "server.log").read_text())
            time.sleep(0.2)
        token = (root / "data" / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        url = f"{base}/api/webhooks/github"
        with httpx.Client(timeout=30) as client:
            created = 0
            print(f"delivery → answer over HTTP (real `phemeral serve`, SQLite, {base}):")
            for count in (1, projects):
                while created < count:
                    created += 1
                    response = client.post(
                        f"{base}/api/projects",
                        headers=auth,
                        json={
                            "name": f"bench{created}",
                            "repo_url": str(repo),
                            "webhook_secret": f"secret-{created}",
                        },
                    )
                    response.raise_for_status()
                secret = f"secret-{count}"
                unmapped = _payload("unmapped", "a" * 40, str(repo))
                for _ in range(5):
                    _deliver(client, url, secret, unmapped)
                samples = [_deliver(client, url, secret, unmapped) for _ in range(deliveries)]
                _report(f"{count} project(s): unmapped branch (202)", samples, 202)
                deploying = [
                    _deliver(
                        client, url, secret, _payload("main", uuid.uuid4().hex + "0" * 8, str(repo))
                    )
                    for _ in range(max(10, deliveries // 4))
                ]
                _report(f"{count} project(s): creates a deployment (201)", deploying, 201)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--deliveries", type=int, default=200)
    args = parser.parse_args()
    bench_signature()
    bench_server(args.projects, args.deliveries)


if __name__ == "__main__":
    main()
