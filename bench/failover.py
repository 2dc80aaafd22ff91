"""The data plane under a control-plane crash and a full platform restart, with steady load.

    .venv/bin/python bench/failover.py [--threads 2] [--interval 0.005] [--rounds 3]
        [--router-processes 1] [--data-dir DIR] [--modes kill,restart,upgrade]

Starts a real `phemeral serve` (SQLite, a fresh data dir unless ``--data-dir`` names one that
already holds the two projects), deploys two apps (`examples/fastapi-uv`, `examples/flask-uv`)
when they are missing, and runs a steady load against both through the router (loopback only):
``--threads`` keep-alive clients per app, each pausing ``--interval`` s between requests, plus
one client asking for an unknown host (the platform's own 404: the router answering).

Per round:

- **kill** (control plane kill -9): SIGKILL of the control-plane child under load; the load
  goes on until the API answers again from a new process, plus 1 s. Prints failed requests
  (goal 0), the longest gap between two successful answers per app, and how long the API was
  away.
- **restart** (stop, then start): SIGTERM of `phemeral serve`, then start it again once it
  exited (what ``systemctl restart`` does).
- **upgrade** (start the new one while the old one serves): a second `phemeral serve` on the
  same data dir takes the public socket over from the running one, which then stops.

For restart and upgrade: failed requests (the clients retry every ``--interval`` s), the
longest gap between two answers for the platform (the 404 of an unknown host) and per app
(goal < 1 s each), and when each answered first after the old process stopped serving.

A failed request is any error or an answer other than the one expected (200 for the apps,
404 for the unknown host).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"fa": ROOT / "examples" / "fastapi-uv", "fl": ROOT / "examples" / "flask-uv"}
BASE = "failover.localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    last_ok: float = 0.0
    longest_gap: float = 0.0
    first_error: str | None = None
    successes: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self, now: float) -> None:
        with self.lock:
            if self.last_ok:
                self.longest_gap = max(self.longest_gap, now - self.last_ok)
            self.last_ok = now
            self.ok += 1
            self.successes.append(now)

    def failure(self, reason: str) -> None:
        with self.lock:
            self.failed += 1
            self.first_error = self.first_error or reason


class Load:
    """Steady keep-alive GETs to each host through the router, until `stop`."""

    def __init__(
        self, port: int, hosts: list[str], threads: int, interval: float, probe: bool = False
    ) -> None:
        self.port = port
        self.interval = interval
        self.expected = dict.fromkeys(hosts, 200)
        if probe:  # the router itself: an unknown host's 404
            self.expected[f"nothing.{BASE}"] = 404
        self.tallies = {host: Tally() for host in self.expected}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(host,), daemon=True)
            for host in self.expected
            for _ in range(threads if self.expected[host] == 200 else 1)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, Tally]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.tallies

    def _run(self, host: str) -> None:
        tally = self.tallies[host]
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": host})
                response = conn.getresponse()
                response.read()
                if response.status == self.expected[host]:
                    tally.success(time.monotonic())
                else:
                    tally.failure(f"HTTP {response.status}")
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                tally.failure(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


class Platform:
    def __init__(self, data_dir: Path, port: int, router_processes: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.router_processes = router_processes
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "serve.log"
        data_dir.parent.mkdir(parents=True, exist_ok=True)

    def start(self) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "phemeral", "serve", "--data-dir", str(self.data_dir)]
        args += ["--port", str(self.port), "--base-domain", BASE]
        args += ["--router-processes", str(self.router_processes)]
        env = {**os.environ, "PHEMERAL_LOG_LEVEL": "warning"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        return self.proc

    def wait_api(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api_ok():
                return
            time.sleep(0.05)
        raise SystemExit(f"the API did not answer within {timeout:g} s; see {self.log}")

    def api_ok(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/api/health", headers={"Host": BASE})
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except (OSError, http.client.HTTPException):
            return False

    def router_answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/", headers={"Host": f"nothing.{BASE}"})
            conn.getresponse().read()
            conn.close()
            return True
        except (OSError, http.client.HTTPException):
            return False

    def has_project(self, name: str) -> bool:
        token = (self.data_dir / "admin-token").read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(
            "GET",
            f"/api/projects/{name}",
            headers={"Host": BASE, "Authorization": f"Bearer {token}"},
        )
        found = conn.getresponse().status == 200
        conn.close()
        return found

    def control_plane_pid(self) -> int:
        assert self.proc is not None
        for pid in _children(self.proc.pid):
            if b"phemeral.dataplane.child\x00control" in _cmdline(pid):
                return pid
        raise SystemExit("no control-plane child found")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def deploy(platform: Platform, project: str, path: Path) -> None:
    env = {
        **os.environ,
        "PHEMERAL_URL": f"http://127.0.0.1:{platform.port}",
        "PHEMERAL_TOKEN": (platform.data_dir / "admin-token").read_text().strip(),
    }
    subprocess.run(
        [sys.executable, "-m", "phemeral", "deploy", str(path), "--project", project, "--json"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def report(name: str, tallies: dict[str, Tally], extra: str) -> None:
    failed = sum(t.failed for t in tallies.values())
    ok = sum(t.ok for t in tallies.values())
    gaps = ", ".join(f"{h.split('.')[0]} {t.longest_gap * 1000:.0f} ms" for h, t in tallies.items())
    errors = {t.first_error for t in tallies.values() if t.first_error}
    print(
        f"{name:22} ok {ok:6}  failed {failed:5}  longest gap: {gaps}  {extra}"
        + (f"  first error: {sorted(errors)[0]}" if errors else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="clients per app")
    parser.add_argument("--interval", type=float, default=0.005, help="pause between requests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--router-processes", type=int, default=1)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--modes", default="kill,restart,upgrade", help="what each round does")
    args = parser.parse_args()
    modes = set(args.modes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="phemeral-bench-failover-"))
    data_dir = args.data_dir or tmp / "data"
    platform = Platform(data_dir, free_port(), args.router_processes)
    try:
        platform.start()
        platform.wait_api()
        for project, path in EXAMPLES.items():
            if not platform.has_project(project):
                deploy(platform, project, path)
        hosts = [f"{project}-production.{BASE}" for project in EXAMPLES]
        print(
            f"load: {args.threads} keep-alive clients per app, {args.interval * 1000:g} ms pause; "
            f"router processes {args.router_processes}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for index in range(args.rounds):
            if "kill" in modes:
                kill_control_plane(platform, hosts, args, index)
            for mode in ("restart", "upgrade"):
                if mode in modes:
                    restart(platform, hosts, args, index, mode)
    finally:
        platform.stop()
        if args.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def kill_control_plane(
    platform: Platform, hosts: list[str], args: argparse.Namespace, index: int
) -> None:
    load = Load(platform.port, hosts, args.threads, args.interval).start()
    time.sleep(1.0)
    old = platform.control_plane_pid()
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while not (platform.api_ok() and platform.control_plane_pid() != old):
        time.sleep(0.02)
    away = time.monotonic() - killed
    time.sleep(1.0)
    report(f"[{index + 1}] kill -9 control", load.stop(), f"API back after {away:.2f} s")


def restart(
    platform: Platform, hosts: list[str], args: argparse.Namespace, index: int, mode: str
) -> None:
    """``restart``: SIGTERM, wait for the exit, start again; ``upgrade``: start a second
    `phemeral serve` on the same data dir while the first serves, and let it take over."""
    load = Load(platform.port, hosts, args.threads, args.interval, probe=True).start()
    deadline = time.monotonic() + 120  # every app awake (a gap counts from a first answer)
    while any(not t.successes for t in load.tallies.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    old = platform.proc
    assert old is not None
    begun = time.monotonic()
    if mode == "restart":
        platform.stop()
        platform.start()
    else:
        platform.start()  # the new process asks the old one to hand over and stop
        try:
            old.wait(timeout=120)
        except subprocess.TimeoutExpired:
            old.kill()
            raise SystemExit("the old platform did not stop after the upgrade") from None
    exited = time.monotonic()
    deadline = exited + 120
    while any(not t.successes or t.successes[-1] < exited for t in load.tallies.values()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    time.sleep(1.0)
    tallies = load.stop()
    failed = sum(t.failed for t in tallies.values())
    ok = sum(t.ok for t in tallies.values())
    parts = []
    for host, tally in tallies.items():
        name = "router" if host.startswith("nothing.") else host.split("-")[0]
        parts.append(f"{name} gap {tally.longest_gap * 1000:.0f} ms")
    errors = {t.first_error for t in tallies.values() if t.first_error}
    print(
        f"[{index + 1}] {mode:9} ok {ok:6}  failed {failed:5}  longest gap: {', '.join(parts)}; "
        f"old stopped {exited - begun:.2f} s after the signal; load {os.getloadavg()[0]:.2f}"
        + (f"  first error: {sorted(errors)[0]}" if errors else ""),
        flush=True,
    )
    platform.wait_api()


if __name__ == "__main__":
    main()
