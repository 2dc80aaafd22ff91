"""Run untrusted code (builds, apps) under an unprivileged uid, in bubblewrap, under limits.

The launch line, outermost first (every piece measured on the target machines):

    [cgroup join] prlimit --nofile --fsize --nproc --core=0 --
        bwrap <namespaces> <minimal filesystem> <binds> --clearenv --setenv … --
            setpriv --reuid U --regid U --clear-groups --no-new-privs --inh-caps=-all
                    --bounding-set=-all --
                <argv>

When the platform runs as root, bwrap runs privileged (no user namespace) so it can bind paths a
per-app uid could not even traverse (interpreters under ``/root/.pyenv``, releases under the
data dir), and the uid drop happens *inside* the sandbox with setpriv: files the code writes on
a bind mount belong to the app uid on the host, it holds no capability, and it cannot change the
mounts. Run as an ordinary user, bwrap makes its own user namespace and no uid change happens.

Without bubblewrap (``available()`` is False, or the operator chose ``sandbox = none``) the
fallback still drops the uid with setpriv and still applies the rlimits; it never runs
untrusted code as root: `wrap` refuses a root-owned spec when the platform is root.

`Cgroup` adds what rlimits cannot: a memory limit over the whole tree, a process cap, a CPU
quota, OOM detection and a kill of everything inside. It speaks cgroup v1 (one directory per
controller, plus the v2 ``unified`` hierarchy for ``cgroup.kill`` on hybrid hosts) and pure
cgroup v2 (one directory with ``memory.max``, ``pids.max``, ``cpu.max``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from phemeral import seccomp
from phemeral.errors import ConfigError

log = logging.getLogger(__name__)

# Top-level names bwrap recreates; a bind under /usr is already visible read-only.
_SYSTEM_RO = (Path("/usr"),)
_MERGED_USR_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"))
_OPTIONAL_LINKS = (("usr/lib64", "/lib64"), ("usr/lib32", "/lib32"), ("usr/libx32", "/libx32"))
# What name resolution and TLS need, nothing more (never /etc wholesale: passwd, shadow, the
# platform's own configuration live there).
_NETWORK_ETC = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
)
_ALWAYS_ETC = ("/etc/localtime",)
_TMP = "/tmp"  # noqa: S108 (the sandbox's own private tmpfs, not the host's /tmp)


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed process may see and use.

    Paths are bound at the SAME absolute path inside (venvs are not relocatable). ``uid`` is the
    host uid the code runs as (``gid`` defaults to it); it is required when the platform is root.
    ``memory_mb`` is enforced by a `Cgroup` (rlimits cannot cap a process tree); the others are
    rlimits (``pids_max`` as RLIMIT_NPROC of the app uid) and the /tmp tmpfs size.
    """

    uid: int | None = None
    gid: int | None = None
    ro_binds: tuple[Path, ...] = ()
    rw_binds: tuple[Path, ...] = ()
    # (host source, path inside, writable): a bind at another path (bwrap only), e.g. an app's
    # throwaway copy-on-write view bound at the release's own path.
    mounts: tuple[tuple[Path, Path, bool], ...] = ()
    chdir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    share_net: bool = False
    # An existing network namespace to run in (`phemeral.network`), instead of none
    # (``--unshare-net``) or the host's (``share_net``); entered with nsenter (root only).
    netns: Path | None = None
    die_with_parent: bool = True
    memory_mb: int | None = None
    pids_max: int | None = 512
    nofile: int = 4096
    fsize_mb: int | None = 2048
    tmpfs_mb: int = 256
    extra_bwrap_args: tuple[str, ...] = ()  # e.g. ("--info-fd", "8"), placed before the binds
    # File descriptors the caller passes to the command (the seccomp filter's fd avoids them).
    pass_fds: tuple[int, ...] = ()
    # Variables that must not appear in argv (secrets): a file written by `write_env_file`,
    # sourced by /bin/sh inside the sandbox just before ``argv`` runs (bound read-only).
    env_file: Path | None = None


class SandboxRefused(ConfigError):
    """The sandbox cannot be set up safely (e.g. root without an app uid)."""


def is_root() -> bool:
    return os.geteuid() == 0


@lru_cache(maxsize=1)
def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/bin") / name) if p.exists()), None
    )


def _require(name: str) -> str:
    path = _tool(name)
    if path is None:
        raise SandboxRefused(f"{name} is not installed (scripts/bootstrap installs it)")
    return path


def wrap(argv: Sequence[str], spec: SandboxSpec, *, use_bwrap: bool | None = None) -> list[str]:
    """The argv that runs ``argv`` inside the sandbox described by ``spec``.

    ``use_bwrap`` None means "when `available()`"; False is the no-bubblewrap fallback (uid
    drop + rlimits + a clean environment only).
    """
    if use_bwrap is None:
        use_bwrap = available()
    root = is_root()
    if root and not spec.uid:
        raise SandboxRefused("refusing to run untrusted code as root: the sandbox needs an app uid")
    tools = {
        "prlimit": _require("prlimit"),
        "setpriv": _require("setpriv") if root else "",
        "bwrap": _require("bwrap") if use_bwrap else "",
        "env": _require("env") if not use_bwrap else "",
        "seccomp": _seccomp_filter() if use_bwrap else "",
        "sh": _require("sh") if use_bwrap else "",
        "nsenter": _require("nsenter") if spec.netns is not None else "",
    }
    return build_argv(argv, spec, root=root, use_bwrap=use_bwrap, tools=tools)


def build_argv(
    argv: Sequence[str],
    spec: SandboxSpec,
    *,
    root: bool,
    use_bwrap: bool,
    tools: Mapping[str, str],
    exists: Callable[[str], bool] | None = None,
) -> list[str]:
    """The pure part of `wrap`: argv in, argv out (``exists`` answers "is this host path there")."""
    if not argv:
        raise SandboxRefused("nothing to run")
    path_exists = exists or _exists
    out: list[str] = []
    if spec.netns is not None:
        if not root:
            raise SandboxRefused("entering a network namespace needs a root platform")
        out += [tools["nsenter"], f"--net={spec.netns}", "--"]
    seccomp_fd: int | None = None
    if use_bwrap and tools.get("seccomp"):
        # bwrap reads the filter from an fd; a fresh one per launch, opened by a tiny shell
        # (bwrap reads it to the end and closes it: the command never sees it).
        seccomp_fd = seccomp_fd_for(spec.pass_fds)
        out += [tools["sh"], "-c", f'exec "$@" {seccomp_fd}<"$0"', tools["seccomp"]]
    out += [tools["prlimit"], *_rlimits(spec), "--"]
    drop = _setpriv(spec, tools["setpriv"]) if root else []
    if use_bwrap:
        bwrap_args = _bwrap_args(spec, root=root, exists=path_exists)
        if seccomp_fd is not None:
            bwrap_args = ["--seccomp", str(seccomp_fd), *bwrap_args]
        out += [tools["bwrap"], *bwrap_args, "--"]
        out += drop
    else:
        # No namespaces: clean environment and working directory via env(1), then the uid drop.
        out += drop
        out += [tools["env"], "-i"]
        if spec.chdir is not None:
            out += [f"--chdir={spec.chdir}"]
        out += [f"{k}={v}" for k, v in sorted(spec.env.items())]
    if spec.env_file is not None:
        out += ["/bin/sh", "-c", '. "$0" && exec "$@"', str(spec.env_file)]
    out += list(argv)
    return out


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def seccomp_fd_for(pass_fds: Iterable[int]) -> int:
    """The fd number the filter is opened on: the first of 3..9 the caller does not pass."""
    taken = set(pass_fds)
    for fd in range(3, 10):
        if fd not in taken:
            return fd
    raise SandboxRefused("no free file descriptor below 10 for the seccomp filter")


def _seccomp_filter() -> str:
    """The compiled filter's path, or "" (logged once) where no syscall table exists."""
    path = seccomp.filter_file()
    if path is None:
        _warn_once("no seccomp filter for this architecture: sandboxes run without one")
        return ""
    return str(path)


@lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    log.warning(message)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_script(env: Mapping[str, str]) -> str:
    """``export K='v'`` lines for sh, every value quoted; unusable names are left out (pure)."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()) if _ENV_NAME.match(k)]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, env: Mapping[str, str], uid: int | None) -> Path:
    """Write ``env`` for `SandboxSpec.env_file`: mode 0600, owned by ``uid`` (who sources it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(env_script(env))
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def _rlimits(spec: SandboxSpec) -> list[str]:
    limits = [f"--nofile={spec.nofile}", "--core=0"]
    if spec.fsize_mb is not None:
        limits.append(f"--fsize={spec.fsize_mb * 1024 * 1024}")
    if spec.pids_max is not None:
        limits.append(f"--nproc={spec.pids_max}")
    return limits


def _setpriv(spec: SandboxSpec, setpriv: str) -> list[str]:
    uid = spec.uid
    gid = spec.gid if spec.gid is not None else uid
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def _bwrap_args(spec: SandboxSpec, *, root: bool, exists: Callable[[str], bool]) -> list[str]:
    check = exists
    if root:
        # Privileged bwrap, no user namespace: the uid drop happens inside, with setpriv.
        args = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not spec.share_net and spec.netns is None:
            args.append("--unshare-net")
    else:
        args = ["--unshare-all", "--unshare-user", "--disable-userns"]
        if spec.share_net:
            args.append("--share-net")
    args.append("--new-session")
    if spec.die_with_parent:
        args.append("--die-with-parent")
    args += ["--ro-bind", "/usr", "/usr"]
    for target, link in _MERGED_USR_LINKS:
        args += ["--symlink", target, link]
    for target, link in _OPTIONAL_LINKS:
        if check("/" + target):
            args += ["--symlink", target, link]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(spec.tmpfs_mb * 1024 * 1024), "--tmpfs", _TMP]
    # POSIX semaphores (multiprocessing locks: hypercorn, Celery's prefork pool) live in /dev/shm
    args += ["--perms", "1777", "--size", str(64 * 1024 * 1024), "--tmpfs", "/dev/shm"]  # noqa: S108 (private)
    args += ["--perms", "0755", "--dir", "/etc"]
    networked = spec.share_net or spec.netns is not None
    etc = list(_ALWAYS_ETC) + (list(_NETWORK_ETC) if networked else [])
    made: set[Path] = {Path("/"), Path("/etc"), Path(_TMP), Path("/usr")}
    for item in etc:
        if check(item):
            args += _parents(Path(item), made)
            args += ["--ro-bind-try", item, item]
    args += list(spec.extra_bwrap_args)
    ro_binds = [*spec.ro_binds, *([spec.env_file] if spec.env_file is not None else [])]
    binds = [(p, "--ro-bind", p) for p in ro_binds] + [(p, "--bind", p) for p in spec.rw_binds]
    binds += [(t, "--bind" if rw else "--ro-bind", s) for s, t, rw in spec.mounts]
    # Parents before children, so a child bind is not hidden by its parent's.
    binds.sort(key=lambda item: (len(item[0].parts), str(item[0])))
    for path, flag, source in binds:
        if not path.is_absolute() or not source.is_absolute():
            raise SandboxRefused(f"sandbox bind {path} must be an absolute path")
        if any(path == p or p in path.parents for p in _SYSTEM_RO):
            continue
        args += _parents(path, made)
        args += [flag, str(source), str(path)]
        made.add(path)
    args += ["--clearenv"]
    for key, value in sorted(spec.env.items()):
        args += ["--setenv", key, value]
    if spec.chdir is not None:
        args += ["--chdir", str(spec.chdir)]
    return args


def _parents(path: Path, made: set[Path]) -> list[str]:
    """``--dir`` for each missing ancestor, traversable (0711) but not listable by the app."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent in made or any(parent == p or p in parent.parents for p in _SYSTEM_RO):
            continue
        args += ["--perms", "0711", "--dir", str(parent)]
        made.add(parent)
    return args


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether bubblewrap works here, in the mode `wrap` would use (tested once, cached)."""
    bwrap = _tool("bwrap")
    if bwrap is None:
        return False
    spec = SandboxSpec(uid=65534 if is_root() else None, pids_max=None, fsize_mb=None)
    try:
        argv = build_argv(
            ["/usr/bin/true"],
            spec,
            root=is_root(),
            use_bwrap=True,
            tools={
                "prlimit": _require("prlimit"),
                "setpriv": _tool("setpriv") or "",
                "bwrap": bwrap,
                "seccomp": _seccomp_filter(),
                "sh": _require("sh"),
            },
        )
        result = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired, ConfigError):
        return False
    return result.returncode == 0


def resolve_use_bwrap(setting: str) -> bool:
    """Turn the ``sandbox`` setting (auto | bwrap | none) into a decision, checking the machine."""
    if setting == "none":
        return False
    ok = available()
    if setting == "bwrap" and not ok:
        raise SandboxRefused("sandbox = bwrap, but bubblewrap does not work on this machine")
    return ok


def describe(argv: Sequence[str]) -> str:
    """A shell-quoted rendering for logs (the env values are elided)."""
    shown: list[str] = []
    skip = 0
    for i, arg in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if arg == "--setenv" and i + 2 < len(argv):
            shown += ["--setenv", argv[i + 1], "…"]
            skip = 2
            continue
        shown.append(arg)
    return shlex.join(shown)


# ---------------------------------------------------------------------------------------------
# cgroups


CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "pids", "cpu")


class Cgroup:
    """One cgroup per build or instance, under ``<root>/<controller>/phemeral/<name>`` (v1) or
    ``<root>/phemeral/<name>`` (v2)."""

    def __init__(self, name: str, *, root: Path = CGROUP_ROOT, parent: str = "phemeral") -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"invalid cgroup name {name!r}")
        self.name = name
        self.root = root
        self.parent = parent
        self.v2 = (root / "cgroup.controllers").exists()

    # -- layout ---------------------------------------------------------------------------

    def dirs(self) -> list[Path]:
        """Every directory of this cgroup (v1: one per controller + the unified one)."""
        if self.v2:
            return [self.root / self.parent / self.name]
        found = [self.root / c / self.parent / self.name for c in _V1_CONTROLLERS]
        if (self.root / "unified" / "cgroup.procs").exists():
            found.append(self.root / "unified" / self.parent / self.name)
        return found

    def _dir(self, controller: str) -> Path:
        if self.v2:
            return self.root / self.parent / self.name
        return self.root / controller / self.parent / self.name

    @staticmethod
    def supported(root: Path = CGROUP_ROOT) -> bool:
        """Whether this process may create cgroups here (root with memory + pids controllers)."""
        if not is_root():
            return False
        if (root / "cgroup.controllers").exists():
            controllers = (root / "cgroup.controllers").read_text().split()
            return "memory" in controllers and "pids" in controllers
        return all(os.access(root / c, os.W_OK) for c in ("memory", "pids"))

    # -- life cycle -----------------------------------------------------------------------

    def create(
        self,
        memory_mb: int | None = None,
        pids_max: int | None = None,
        cpu_quota: float | None = None,
    ) -> Cgroup:
        """Make the directories and write the limits (``cpu_quota`` in CPUs, e.g. 1.5)."""
        if self.v2:
            parent = self.root / self.parent
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        for directory in self.dirs():
            directory.mkdir(parents=True, exist_ok=True)
        if memory_mb is not None:
            limit = str(memory_mb * 1024 * 1024)
            if self.v2:
                self._write("memory", "memory.max", limit)
                self._write("memory", "memory.swap.max", "0", optional=True)
            else:
                self._write("memory", "memory.limit_in_bytes", limit)
                self._write("memory", "memory.memsw.limit_in_bytes", limit, optional=True)
                # Its own limit never pushes it to swap (an OOM kill, as without swap); the
                # paged tier's explicit page-out still does (`runtime.paging`).
                self._write("memory", "memory.swappiness", "0", optional=True)
        if pids_max is not None:
            self._write("pids", "pids.max", str(pids_max))
        if cpu_quota is not None:
            period = 100_000
            quota = int(cpu_quota * period)
            if self.v2:
                self._write("cpu", "cpu.max", f"{quota} {period}")
            else:
                self._write("cpu", "cpu.cfs_period_us", str(period))
                self._write("cpu", "cpu.cfs_quota_us", str(quota))
        return self

    def _write(self, controller: str, name: str, value: str, *, optional: bool = False) -> None:
        path = self._dir(controller) / name
        try:
            path.write_text(value)
        except OSError:
            if not optional:
                raise

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs()]

    def join_argv(self) -> list[str]:
        """A prefix that moves itself into this cgroup, then execs the rest of the argv.

        Fork-safe (no preexec_fn): ``sh -c 'echo $$ > …/cgroup.procs; exec "$@"' sh <argv…>``.
        """
        writes = "; ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self.procs_files())
        return [_tool("sh") or "/bin/sh", "-c", f'{writes}; exec "$@"', "sh"]

    def attach(self, pid: int) -> None:
        for procs in self.procs_files():
            procs.write_text(str(pid))

    def pids(self) -> list[int]:
        procs = self.procs_files()[0]
        try:
            return [int(line) for line in procs.read_text().split()]
        except OSError:
            return []

    def kill(self, *, timeout: float = 5.0) -> None:
        """Kill every process inside and wait until the cgroup is empty."""
        kill_files = [d / "cgroup.kill" for d in self.dirs() if (d / "cgroup.kill").exists()]
        for kill_file in kill_files:
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def allow_swap(self) -> None:
        """Let the paged tier write its pages to swap (v2: ``memory.swap.max``, 0 since
        `create`, up to the memory limit; v1 charges swap with memory already)."""
        if self.v2:
            limit = self._read("memory", "memory.max")
            self._write("memory", "memory.swap.max", limit or "max", optional=True)

    def reclaim(self) -> None:
        """Ask the kernel to reclaim what this cgroup holds: after a page-out, the swap cache
        (pages already written to swap stay in memory until reclaimed) and page cache."""
        if self.v2:
            current = self._read("memory", "memory.current")
            if current:
                self._write("memory", "memory.reclaim", current, optional=True)
        else:  # with swappiness 0 (`create`) reclaim would not look at swap-cache pages
            self._write("memory", "memory.swappiness", "100", optional=True)
            try:
                self._write("memory", "memory.force_empty", "0", optional=True)
            finally:
                self._write("memory", "memory.swappiness", "0", optional=True)

    def memory_kb(self) -> int | None:
        """What this cgroup holds in memory (kB; swap cache and page cache charged to it
        included, swap not), or None without a memory controller."""
        raw = self._read("memory", "memory.current" if self.v2 else "memory.usage_in_bytes")
        return int(raw) // 1024 if raw and raw.isdigit() else None

    def _read(self, controller: str, name: str) -> str | None:
        try:
            return (self._dir(controller) / name).read_text().strip()
        except OSError:
            return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process here for exceeding the memory limit."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            text = (self._dir("memory") / name).read_text()
        except OSError:
            return False
        counters = dict(_pairs(text.splitlines()))
        return int(counters.get("oom_kill", "0")) > 0

    def memory_peak_bytes(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self._dir("memory") / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Kill what is left, then remove the directories (children first)."""
        self.kill()
        for directory in reversed(self.dirs()):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _pairs(lines: Iterable[str]) -> Iterable[tuple[str, str]]:
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            yield parts[0], parts[1]
