"""The attacks, run from inside a deployed app and from a build's setup.py (stdlib only).

This file is copied into the attacking project; `run(targets)` returns what each attack saw.
A target is ``[host, port]``; "denied" means the connection failed (refused, unreachable,
timed out), "open" that something answered the TCP handshake.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess


def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2):
            return "open"
    except OSError as exc:
        return f"denied ({errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)})"


def listeners() -> list[str]:
    """Every listening TCP socket this process can see in /proc/net/tcp{,6}: 'addr:port'."""
    seen = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                addr, port = fields[1].rsplit(":", 1)
                seen.append(f"{addr}:{int(port, 16)}")
    return seen


def bind_any() -> dict[str, object]:
    """Bind 0.0.0.0:0 and report the port (harmless when nothing routes to it)."""
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        return {"bound": True, "port": sock.getsockname()[1]}
    except OSError as exc:
        return {"bound": False, "error": str(exc)}
    finally:
        sock.close()


def syscalls() -> dict[str, str]:
    libc = ctypes.CDLL(None, use_errno=True)

    def outcome(result: int) -> str:
        return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

    found = {
        "unshare_user": outcome(libc.unshare(0x10000000)),
        "unshare_net": outcome(libc.unshare(0x40000000)),
        "mount_tmpfs": outcome(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    }
    try:
        cmd = subprocess.run(
            ["unshare", "-Urm", "id", "-u"], capture_output=True, text=True, timeout=10
        )
        found["unshare_cmd"] = f"exit {cmd.returncode}: {(cmd.stdout + cmd.stderr).strip()}"
    except OSError as exc:
        found["unshare_cmd"] = f"not run: {exc}"
    return found


def egress(index_host: str) -> dict[str, object]:
    try:
        address = socket.getaddrinfo(index_host, 443, socket.AF_INET)[0][4][0]
    except OSError as exc:
        return {"dns": f"failed: {exc}"}
    return {"dns": address, "connect": connect(str(address), 443)}


def run(targets: list[list[object]], index_host: str = "pypi.org") -> dict[str, object]:
    return {
        "uid": os.getuid(),
        "connect": {f"{h}:{p}": connect(str(h), int(str(p))) for h, p in targets},
        "listeners": listeners(),
        "bind": bind_any(),
        "syscalls": syscalls(),
        "egress": egress(index_host),
    }
