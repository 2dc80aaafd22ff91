"""The seccomp filter: its table matches the kernel's numbers, and it refuses what it lists
while everything an app does (fork, threads, subprocesses) keeps working."""

from __future__ import annotations

import os
import platform
import re
import struct
import subprocess
from pathlib import Path

import pytest

from phemeral import sandbox, seccomp
from phemeral.sandbox import SandboxSpec

APP_UID = 20_078
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


def test_every_denied_call_has_a_reason_and_an_errno() -> None:
    names = [d.name for d in seccomp.DENY]
    assert len(names) == len(set(names))
    for entry in seccomp.DENY:
        assert entry.reason and entry.errno in (1, 38)
    for required in ("unshare", "setns", "mount", "bpf", "keyctl", "ptrace", "init_module"):
        assert required in names


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_numbers_match_the_kernel_headers(arch: str) -> None:
    header = HEADERS[arch]
    if not header.exists():
        pytest.skip(f"{header} not installed")
    numbers = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", header.read_text())
    }
    table = seccomp.ARCHES[arch].numbers
    for name, number in table.items():
        assert numbers.get(name) == number, name
    missing = {d.name for d in seccomp.DENY} - set(table)
    assert missing <= {"iopl", "ioperm", "uselib"}  # x86-only calls


def _run(program: bytes, nr: int, arg0: int = 0, arch: int = 0xC000003E) -> int:
    """A tiny classic-BPF interpreter: what the kernel would answer for one call."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35, 0x45):
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def test_program_decisions() -> None:
    program = seccomp.program("x86_64")
    allow, eperm, enosys = 0x7FFF0000, 0x50001, 0x50026
    assert _run(program, 0) == allow  # read
    assert _run(program, 272) == eperm  # unshare
    assert _run(program, 165) == eperm  # mount
    assert _run(program, 435) == enosys  # clone3: libc falls back to clone
    assert _run(program, 56, arg0=0x01200011) == allow  # fork()'s clone flags
    assert _run(program, 56, arg0=0x003D0F00) == allow  # pthread_create's clone flags
    assert _run(program, 56, arg0=0x10000000 | 17) == eperm  # CLONE_NEWUSER
    assert _run(program, 56, arg0=0x40000000) == eperm  # CLONE_NEWNET
    assert _run(program, 0x40000000 + 1) == enosys  # x32 ABI
    assert _run(program, 1, arch=0x40000003) == enosys  # i386 entry point
    assert len(program) // 8 < 4096


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_sandboxed_code_cannot_make_namespaces_or_mount() -> None:
    if not sandbox.available() or platform.machine() not in seccomp.ARCHES:
        pytest.skip("bubblewrap or a syscall table unavailable")
    script = r"""
import ctypes, errno, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def err(r):
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
print("status", [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")])
print("unshare", err(libc.unshare(0x10000000)))
print("mount", err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("subprocess", subprocess.run(["true"]).returncode)
"""
    spec = SandboxSpec(uid=APP_UID, env={"PATH": "/usr/bin"})
    argv = sandbox.wrap(["python3", "-c", script], spec)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    assert "status ['2']" in out  # filter mode
    assert "unshare EPERM" in out and "mount EPERM" in out
    assert "subprocess 0" in out
    result = subprocess.run(
        sandbox.wrap(["unshare", "-Urm", "id"], spec), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and "Operation not permitted" in result.stderr
    assert "uid=0" not in result.stdout
