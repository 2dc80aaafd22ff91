"""The system calls no web app or build needs, as a seccomp filter (classic BPF, pure Python).

`DENY` below is the one list: every entry names the call, the errno the caller gets, and why it
is refused. `program(arch)` compiles it to the BPF program the kernel runs on every system call;
`filter_file()` writes it once (content-addressed) so `phemeral.sandbox` can hand it to
``bwrap --seccomp FD``, which installs it just before the sandboxed command runs (after bwrap's
own mounts, before the uid drop, so it covers setpriv and everything the app starts).

Shape of the program (the kernel refuses nothing else):

    arch != the native one            -> ENOSYS (no 32-bit or x32 entry points into the kernel)
    x86-64 call number >= 0x40000000  -> ENOSYS (the x32 ABI)
    call in DENY                      -> its errno
    clone with a namespace flag       -> EPERM  (new user/mount/net/pid/… namespaces)
    anything else                     -> allowed

Architectures: x86-64 and aarch64 (numbers below). On another architecture `program` raises
and the sandbox runs without a filter (logged by the caller).
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import struct
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Denied:
    name: str
    errno: int
    reason: str


_EPERM = errno.EPERM
_ENOSYS = errno.ENOSYS  # for calls libraries probe and fall back from

DENY: tuple[Denied, ...] = (
    # -- namespaces: the way to a root-like uid, new mounts and a different network ------------
    Denied("unshare", _EPERM, "new namespaces (`unshare -U` makes the tenant uid 0 with caps)"),
    Denied("setns", _EPERM, "joining another namespace (another tenant's, the host's)"),
    Denied(
        "clone3", _ENOSYS, "flags live in memory a filter cannot read; libc falls back to clone"
    ),
    # clone itself is allowed (fork, threads) unless its flags ask for a namespace (see NS_FLAGS)
    # -- file systems: the sandbox's view of the host is fixed by bwrap -----------------------
    Denied("mount", _EPERM, "mounting (only useful with privileges a tenant must not gain)"),
    Denied("umount2", _EPERM, "unmounting the sandbox's binds would reveal what lies under them"),
    Denied("pivot_root", _EPERM, "changing the root file system"),
    Denied("fsopen", _EPERM, "new mount API"),
    Denied("fsconfig", _EPERM, "new mount API"),
    Denied("fsmount", _EPERM, "new mount API"),
    Denied("fspick", _EPERM, "new mount API"),
    Denied("move_mount", _EPERM, "new mount API"),
    Denied("open_tree", _EPERM, "new mount API (clones mount trees)"),
    Denied("mount_setattr", _EPERM, "new mount API (changes mount flags)"),
    Denied("open_by_handle_at", _EPERM, "opens files by handle, around the mount view (shocker)"),
    Denied("name_to_handle_at", _EPERM, "the other half of file handles; no web app needs them"),
    Denied("quotactl", _EPERM, "disk quota administration"),
    Denied("quotactl_fd", _EPERM, "disk quota administration"),
    Denied("swapon", _EPERM, "swap administration"),
    Denied("swapoff", _EPERM, "swap administration"),
    Denied("acct", _EPERM, "process accounting administration"),
    # -- the kernel itself: large attack surface, history of local privilege escalations -------
    Denied("bpf", _EPERM, "eBPF programs and maps (verifier bugs are a classic escalation)"),
    Denied("perf_event_open", _EPERM, "performance counters: side channels, a history of CVEs"),
    Denied("userfaultfd", _EPERM, "used to win kernel races in exploits; no web app needs it"),
    Denied("io_uring_setup", _ENOSYS, "io_uring: frequent escalations; libraries fall back"),
    Denied("io_uring_enter", _ENOSYS, "io_uring (see io_uring_setup)"),
    Denied("io_uring_register", _ENOSYS, "io_uring (see io_uring_setup)"),
    Denied("keyctl", _EPERM, "kernel keyrings are not namespaced: other tenants' keys"),
    Denied("add_key", _EPERM, "kernel keyrings (see keyctl)"),
    Denied("request_key", _EPERM, "kernel keyrings (see keyctl)"),
    Denied("kexec_load", _EPERM, "loading a new kernel"),
    Denied("kexec_file_load", _EPERM, "loading a new kernel"),
    Denied("init_module", _EPERM, "loading kernel modules"),
    Denied("finit_module", _EPERM, "loading kernel modules"),
    Denied("delete_module", _EPERM, "unloading kernel modules"),
    Denied("lookup_dcookie", _EPERM, "profiling interface, privileged"),
    # -- other processes: a tenant's code must not inspect or steer another process -----------
    Denied("ptrace", _EPERM, "tracing processes (the app's own workers share its uid)"),
    Denied("process_vm_readv", _EPERM, "reading another process's memory"),
    Denied("process_vm_writev", _EPERM, "writing another process's memory"),
    Denied("kcmp", _EPERM, "compares kernel objects of other processes (an information leak)"),
    # -- the machine: clock, console, reboot ---------------------------------------------------
    Denied("reboot", _EPERM, "rebooting"),
    Denied("syslog", _EPERM, "the kernel log (addresses that defeat KASLR)"),
    Denied("settimeofday", _EPERM, "setting the host clock"),
    Denied("clock_settime", _EPERM, "setting the host clock"),
    Denied("clock_adjtime", _EPERM, "adjusting the host clock"),
    Denied("adjtimex", _EPERM, "adjusting the host clock (reading it stays possible elsewhere)"),
    Denied("vhangup", _EPERM, "hangs up the terminal"),
    Denied("iopl", _EPERM, "raw I/O port access (x86 only)"),
    Denied("ioperm", _EPERM, "raw I/O port access (x86 only)"),
    Denied("uselib", _EPERM, "obsolete loader call with a history of bugs (x86 only)"),
)

# clone(flags, …): any of these makes a new namespace (CLONE_NEWTIME is 0x80, a clone3-only
# flag whose bit is part of the exit signal in clone's flags, so it is not checked there).
NS_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


@dataclass(frozen=True)
class Arch:
    name: str
    audit: int  # AUDIT_ARCH_* as seen in seccomp_data.arch
    numbers: dict[str, int]
    x32_bit: bool = False  # x86-64: call numbers with bit 30 set are the x32 ABI


def _numbers(text: str) -> dict[str, int]:
    """``name number`` pairs, whitespace-separated."""
    words = text.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


_X86_64 = Arch(
    "x86_64",
    0xC000003E,
    _numbers(
        """
unshare 272 setns 308 clone 56 clone3 435 mount 165 umount2 166 pivot_root 155
fsopen 430 fsconfig 431 fsmount 432 fspick 433 move_mount 429 open_tree 428
mount_setattr 442 open_by_handle_at 304 name_to_handle_at 303 quotactl 179
quotactl_fd 443 swapon 167 swapoff 168 acct 163 bpf 321 perf_event_open 298
userfaultfd 323 io_uring_setup 425 io_uring_enter 426 io_uring_register 427 keyctl 250
add_key 248 request_key 249 kexec_load 246 kexec_file_load 320 init_module 175
finit_module 313 delete_module 176 lookup_dcookie 212 ptrace 101 process_vm_readv 310
process_vm_writev 311 kcmp 312 reboot 169 syslog 103 settimeofday 164 clock_settime 227
clock_adjtime 305 adjtimex 159 vhangup 153 iopl 172 ioperm 173 uselib 134
"""
    ),
    x32_bit=True,
)
# aarch64 uses the generic table (asm-generic/unistd.h); it has no iopl/ioperm/uselib.
_AARCH64 = Arch(
    "aarch64",
    0xC00000B7,
    _numbers(
        """
unshare 97 setns 268 clone 220 clone3 435 mount 40 umount2 39 pivot_root 41 fsopen 430
fsconfig 431 fsmount 432 fspick 433 move_mount 429 open_tree 428 mount_setattr 442
open_by_handle_at 265 name_to_handle_at 264 quotactl 60 quotactl_fd 443 swapon 224
swapoff 225 acct 89 bpf 280 perf_event_open 241 userfaultfd 282 io_uring_setup 425
io_uring_enter 426 io_uring_register 427 keyctl 219 add_key 217 request_key 218
kexec_load 104 kexec_file_load 294 init_module 105 finit_module 273 delete_module 106
lookup_dcookie 18 ptrace 117 process_vm_readv 270 process_vm_writev 271 kcmp 272
reboot 142 syslog 116 settimeofday 170 clock_settime 112 clock_adjtime 266 adjtimex 171
vhangup 58
"""
    ),
)
ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


class UnsupportedArch(Exception):
    """No syscall table for this machine: the sandbox runs without a filter."""


# Classic BPF, as <linux/filter.h> and <linux/seccomp.h> define it.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16  # args[0], low 32 bits (little-endian machines)


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(arch_name: str | None = None) -> bytes:
    """The filter for ``arch_name`` (default: this machine) as ``struct sock_filter`` bytes."""
    name = arch_name or platform.machine()
    arch = ARCHES.get(name)
    if arch is None:
        raise UnsupportedArch(f"no seccomp syscall table for {name}")
    out = [
        _insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(_JEQ_K, 1, 0, arch.audit),
        _insn(_RET_K, 0, 0, _RET_ERRNO | _ENOSYS),
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch.x32_bit:
        out += [_insn(_JGE_K, 0, 1, 0x40000000), _insn(_RET_K, 0, 0, _RET_ERRNO | _ENOSYS)]
    for entry in DENY:
        number = arch.numbers.get(entry.name)
        if number is None:
            continue  # the call does not exist on this architecture
        out += [_insn(_JEQ_K, 0, 1, number), _insn(_RET_K, 0, 0, _RET_ERRNO | entry.errno)]
    mask = 0
    for flag in NS_FLAGS.values():
        mask |= flag
    out += [
        _insn(_JEQ_K, 0, 3, arch.numbers["clone"]),
        _insn(_LD_W_ABS, 0, 0, _OFF_ARG0_LOW),
        _insn(_JSET_K, 0, 1, mask),
        _insn(_RET_K, 0, 0, _RET_ERRNO | _EPERM),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(out)


def _filter_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/phemeral")
    return Path(tempfile.gettempdir()) / f"phemeral-{os.geteuid()}"


@lru_cache(maxsize=1)
def filter_file() -> Path | None:
    """The compiled filter in a root-only file named by its hash (written once, shared by every
    platform on the machine); None on an architecture without a table."""
    try:
        data = program()
    except UnsupportedArch:
        return None
    directory = _filter_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"seccomp-{hashlib.sha256(data).hexdigest()[:16]}.bpf"
    if path.exists() and path.read_bytes() == data:
        return path
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".seccomp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    Path(tmp).replace(path)
    return path
