"""Router vs nginx as a reverse proxy, side by side in one run.

    .venv/bin/python bench/router.py [--duration 8] [--rounds 3] [--connections 50]
        [--app fastapi|asgi] [--tls] [--router-processes N] [--wrk-threads T]

Starts one upstream (uvicorn, 1 worker, FastAPI hello world as in the research note, or a bare
ASGI app with ``--app asgi``), nginx (1 worker, keep-alive
upstream pool of 64) and the Phemeral router (1 process, uvloop) in front of the same upstream,
then runs wrk against each in turn, rounds interleaved to spread machine noise:

- throughput at ``--connections`` (default 50): requests/s, p50, p99, router/nginx ratio
  (goal ≥ 0.9) and proxy CPU per request;
- latency at moderate load (``--moderate`` connections, default 2): p99 added over direct
  (goal ≤ 1 ms).

``--tls``: both proxies terminate TLS (same certificate and key, TLS 1.2/1.3, one P-256 leaf
made for the run) in front of the same plain upstream, and three runs are compared:

- keep-alive requests/s over TLS at ``--connections`` (goal ≥ 0.9× nginx);
- handshakes/s: ``Connection: close`` on every request, so each one is a full handshake
  (no session resumption on either side) plus one request;
- p99 added over the plain upstream at ``--moderate`` keep-alive connections.

``--router-processes N`` runs N router processes on the port (``SO_REUSEPORT``, as
``phemeral serve --router-processes`` does) against nginx with N workers; proxy CPU per request
is summed over every process of each proxy. ``--wrk-threads`` gives wrk more threads (default
1), so the load generator is not what limits several router processes.

Installs nginx-light and wrk with apt-get when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST_HEADER = "dep1.phemeral.localhost"
WRK_THREADS = 1  # --wrk-threads

HELLO_APPS = {
    # The app of the research measurements (perf.md §4): FastAPI hello world.
    "fastapi": """
from fastapi import FastAPI
app = FastAPI()

@app.get("/")
def hello():
    return {"message": "Hello, world!"}
""",
    # A bare ASGI app: a faster upstream, so proxy CPU weighs more in the ratio.
    "asgi": """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
""",
}

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port}{tls};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}
}}
"""


NGINX_TLS = """ ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_session_cache off;
        ssl_session_tickets off"""


def make_certificate(tmp: Path) -> None:
    """A self-signed P-256 leaf for the bench host (and 127.0.0.1: wrk sends the URL's host as
    SNI), written as cert.pem / key.pem for both proxies."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST_HEADER)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST_HEADER), x509.DNSName("127.0.0.1")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port} within {timeout:g} s")


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk")) if not _which(tool)]
    if missing:
        print(f"installing {' '.join(missing)} …", flush=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/sbin") / tool) if p.exists()), None
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> float:
    """CPU of ``pid`` and its direct children (nginx master + worker)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError):
                total += cpu_seconds(int(child))
    return total


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    cpu_us: float | None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    port: int,
    connections: int,
    duration: int,
    pid: int | None,
    *,
    scheme: str = "http",
    close: bool = False,
) -> Run:
    before = process_tree_cpu(pid) if pid else 0.0
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        [
            _which("wrk") or "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Host: {HOST_HEADER}",
            *extra,
            f"{scheme}://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = process_tree_cpu(pid) - before if pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  warning: {errors.group(0)}", flush=True)
    return Run(rps, p50, p99, used / total * 1e6 if pid and total else None)


def serve_router(
    port: int, upstream_port: int, tls_dir: str | None = None, processes: int = 1
) -> None:
    """Child mode: the router alone in this process, routing dep1 to the upstream; with
    ``tls_dir`` its HTTPS listener on ``port`` (the plain one on a free port) serving the
    certificate in that folder. With ``processes`` > 1 it starts that many minus one more
    router processes on the same port (``SO_REUSEPORT``), its direct children, which die with
    it."""
    import ctypes

    import uvloop

    from phemeral.dataplane.process import public_socket

    if os.environ.get("BENCH_ROUTER_WORKER"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the first one
    elif processes > 1:
        for _ in range(processes - 1):
            subprocess.Popen(
                [sys.executable, __file__, "--serve-router", *sys.argv[2:]],
                env={**os.environ, "BENCH_ROUTER_WORKER": "1"},
            )
    reuse = processes > 1
    plain = public_socket("127.0.0.1", free_port() if tls_dir else port, reuse_port=reuse)
    secure = public_socket("127.0.0.1", port, reuse_port=reuse) if tls_dir else None

    from phemeral.models import DeploymentRoute, DeploymentStatus, RoutingSnapshot, Upstream
    from phemeral.router import serve_router as serve

    class StaticBackends:
        """Bench stand-in for the runtime: the deployment is always running."""

        async def ensure_running(self, deployment_id: str) -> Upstream:
            return Upstream(port=upstream_port)

        def request_started(self, deployment_id: str) -> None:
            pass

        def request_finished(self, deployment_id: str) -> None:
            pass

    class NullSink:
        def write(self, lines: list[object]) -> None:
            pass

    async def main() -> None:
        snapshot = RoutingSnapshot(
            base_domain="phemeral.localhost",
            deployments={"dep1": DeploymentRoute(DeploymentStatus.SUCCESSFUL, "bench", "prod")},
            domains={},
        )
        certificates = []
        if tls_dir is not None:
            from phemeral.tls.pem import certificate_from_files

            folder = Path(tls_dir)
            certificates.append(certificate_from_files(folder / "cert.pem", folder / "key.pem"))
        await serve(
            host="127.0.0.1",
            port=0,
            sock=plain,
            https_sock=secure,
            snapshot=snapshot,
            backends=StaticBackends(),
            control_plane=Upstream(port=upstream_port),
            log_sink=NullSink(),  # type: ignore[arg-type]
            https_port=port if tls_dir else None,
            certificates=certificates,
        )
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--moderate", type=int, default=2, help="connections for the p99 run")
    parser.add_argument("--app", choices=sorted(HELLO_APPS), default="fastapi")
    parser.add_argument("--tls", action="store_true", help="both proxies terminate TLS")
    parser.add_argument(
        "--router-processes", type=int, default=1, help="router processes (nginx workers)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--serve-router", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_router:
        port, upstream, processes, *tls_dir = args.serve_router
        serve_router(int(port), int(upstream), tls_dir[0] if tls_dir else None, int(processes))
        return
    global WRK_THREADS
    WRK_THREADS = args.wrk_threads
    ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="phemeral-bench-router-"))
    (tmp / "hello.py").write_text(HELLO_APPS[args.app])
    upstream_port, nginx_port, router_port = free_port(), free_port(), free_port()
    tls = NGINX_TLS.format(tmp=tmp) if args.tls else ""
    if args.tls:
        make_certificate(tmp)
    (tmp / "nginx.conf").write_text(
        NGINX_CONF.format(
            tmp=tmp,
            upstream=upstream_port,
            port=nginx_port,
            tls=tls,
            workers=args.router_processes,
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "hello:app", "--port", str(upstream_port),
             "--workers", "1", "--no-access-log", "--log-level", "warning",
             "--loop", "uvloop", "--http", "httptools"],
            cwd=tmp,
        )  # fmt: skip
        procs.append(upstream)
        nginx = subprocess.Popen([_which("nginx") or "nginx", "-c", str(tmp / "nginx.conf")])
        procs.append(nginx)
        router_args = [
            "--serve-router",
            str(router_port),
            str(upstream_port),
            str(args.router_processes),
        ]
        if args.tls:
            router_args.append(str(tmp))
        router = subprocess.Popen([sys.executable, __file__, *router_args])
        procs.append(router)
        for port in (upstream_port, nginx_port, router_port):
            wait_port(port)
        targets = {
            "direct": (upstream_port, None),
            "nginx": (nginx_port, nginx.pid),
            "router": (router_port, router.pid),
        }
        if args.tls:
            tls_rounds(targets, args)
            return
        for port, _ in targets.values():  # warm-up
            wrk(port, args.connections, 1, None)
        load: dict[str, list[Run]] = {name: [] for name in targets}
        calm: dict[str, list[Run]] = {name: [] for name in targets}
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds} …", flush=True)
            for name, (port, pid) in targets.items():
                load[name].append(wrk(port, args.connections, args.duration, pid))
            for name, (port, pid) in targets.items():
                calm[name].append(wrk(port, args.moderate, max(2, args.duration // 2), pid))
        report(load, calm, args)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM if proc is not procs[1] else signal.SIGQUIT)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def tls_rounds(targets: dict[str, tuple[int, int | None]], args: argparse.Namespace) -> None:
    """Keep-alive over TLS, a handshake per request, and moderate-load latency; interleaved."""
    proxies = {name: target for name, target in targets.items() if name != "direct"}
    direct_port = targets["direct"][0]
    for port, _ in proxies.values():  # warm-up
        wrk(port, args.connections, 1, None, scheme="https")
    keepalive: dict[str, list[Run]] = {name: [] for name in proxies}
    handshakes: dict[str, list[Run]] = {name: [] for name in proxies}
    calm: dict[str, list[Run]] = {name: [] for name in targets}
    for index in range(args.rounds):
        print(f"round {index + 1}/{args.rounds} …", flush=True)
        for name, (port, pid) in proxies.items():
            keepalive[name].append(wrk(port, args.connections, args.duration, pid, scheme="https"))
        for name, (port, pid) in proxies.items():
            handshakes[name].append(
                wrk(port, args.connections, args.duration, pid, scheme="https", close=True)
            )
        calm["direct"].append(wrk(direct_port, args.moderate, max(2, args.duration // 2), None))
        for name, (port, pid) in proxies.items():
            calm[name].append(
                wrk(port, args.moderate, max(2, args.duration // 2), pid, scheme="https")
            )
    print()
    print(
        f"upstream: uvicorn 1 worker, {args.app} hello (plain HTTP); "
        f"nginx {args.router_processes} worker(s); router {args.router_processes} process(es)"
    )
    print("both terminate TLS with the same P-256 certificate; no session resumption")
    for title, runs_by in (
        (f"keep-alive over TLS: wrk -t1 -c{args.connections} -d{args.duration}s", keepalive),
        (f"a full handshake per request (Connection: close), -c{args.connections}", handshakes),
    ):
        print(f"{title}, median of {args.rounds}")
        print(f"{'target':8} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU µs/req':>17}")
        for name, runs in runs_by.items():
            cpu = [r.cpu_us for r in runs if r.cpu_us is not None]
            cpu_text = f"{statistics.median(cpu):.1f}" if cpu else "-"
            print(
                f"{name:8} {_median(runs, 'rps'):>10.0f} {_median(runs, 'p50'):>8.2f} "
                f"{_median(runs, 'p99'):>8.2f} {cpu_text:>17}"
            )
        print()
    print(f"moderate load: wrk -t1 -c{args.moderate} (keep-alive), median of {args.rounds}")
    direct_p99 = _median(calm["direct"], "p99")
    for name, runs in calm.items():
        p99 = _median(runs, "p99")
        added = "-" if name == "direct" else f"{p99 - direct_p99:+.2f}"
        print(f"{name:8} p50 {_median(runs, 'p50'):.2f} ms  p99 {p99:.2f} ms  added p99 {added}")
    keep_ratio = _median(keepalive["router"], "rps") / _median(keepalive["nginx"], "rps")
    hs_ratio = _median(handshakes["router"], "rps") / _median(handshakes["nginx"], "rps")
    added = _median(calm["router"], "p99") - direct_p99
    print()
    verdict = "met" if keep_ratio >= 0.9 else "MISSED"
    print(f"router/nginx keep-alive TLS throughput: {keep_ratio:.2f}  (goal ≥ 0.90: {verdict})")
    print(f"router/nginx handshakes per second: {hs_ratio:.2f}")
    print(cpu_line(keepalive))
    print(f"router added p99 over TLS at -c{args.moderate}: {added:.2f} ms")


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def cpu_line(runs_by: dict[str, list[Run]]) -> str:
    """Proxy CPU per request, router vs nginx side by side, and their ratio."""
    cpu = {
        name: statistics.median(c)
        for name in ("router", "nginx")
        if (c := [r.cpu_us for r in runs_by[name] if r.cpu_us is not None])
    }
    if len(cpu) < 2:
        return "proxy CPU per request: not measured"
    return (
        f"proxy CPU per request: router {cpu['router']:.1f} µs vs nginx {cpu['nginx']:.1f} µs "
        f"(router/nginx {cpu['router'] / cpu['nginx']:.2f}×); load average {load_text()}"
    )


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(run, attr) for run in runs)


def report(
    load: dict[str, list[Run]], calm: dict[str, list[Run]], args: argparse.Namespace
) -> None:
    print()
    print(
        f"upstream: uvicorn 1 worker, {args.app} hello; nginx {args.router_processes} "
        f"worker(s); router {args.router_processes} process(es); load average {load_text()}"
    )
    print(
        f"throughput: wrk -t{WRK_THREADS} -c{args.connections} -d{args.duration}s, "
        f"median of {args.rounds}"
    )
    print(f"{'target':8} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU µs/req':>17}")
    for name, runs in load.items():
        cpu = [r.cpu_us for r in runs if r.cpu_us is not None]
        cpu_text = f"{statistics.median(cpu):.1f}" if cpu else "-"
        print(
            f"{name:8} {_median(runs, 'rps'):>10.0f} {_median(runs, 'p50'):>8.2f} "
            f"{_median(runs, 'p99'):>8.2f} {cpu_text:>17}"
        )
    ratio = _median(load["router"], "rps") / _median(load["nginx"], "rps")
    print()
    print(f"moderate load: wrk -t1 -c{args.moderate}, median of {args.rounds}")
    print(f"{'target':8} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8} {'added p99 ms':>13}")
    direct_p99 = _median(calm["direct"], "p99")
    for name, runs in calm.items():
        p99 = _median(runs, "p99")
        added = "-" if name == "direct" else f"{p99 - direct_p99:+.2f}"
        print(
            f"{name:8} {_median(runs, 'rps'):>10.0f} {_median(runs, 'p50'):>8.2f} "
            f"{p99:>8.2f} {added:>13}"
        )
    added_router = _median(calm["router"], "p99") - direct_p99
    print()
    verdict = "met" if ratio >= 0.9 else "MISSED"
    print(f"router/nginx throughput ratio: {ratio:.2f}  (goal ≥ 0.90: {verdict})")
    print(cpu_line(load))
    print(
        f"router added p99 at -c{args.moderate}: {added_router:.2f} ms  "
        f"(goal ≤ 1 ms: {'met' if added_router <= 1.0 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
