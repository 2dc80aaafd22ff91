"""The paged tier: a dormant template's memory written out to swap, read back by the next wake.

A template long unused (``Settings.page_out_after``) is asked to give up its pages with
``process_madvise(MADV_PAGEOUT)`` over every mapping of every process it keeps (`footprint`):
its anonymous memory is written to swap, its file pages go back to the page cache (dropped
there unless another process maps them). A second later its cgroup reclaims what it still
holds (`sandbox.Cgroup.reclaim`): written pages would otherwise stay in RAM as swap cache.

It stays a live process and a wake forks it as usual. The pages the template and its fork
touched for a wake (`present_ranges`, anonymous and file-backed) become its hot set; after each
later page-out the hot sets within a budget are read back into their templates (`bring_in`),
so a fork starts with what it needs and wakes as from a resident template. Without one in
memory a wake first submits the reads of the hot set, or of the template's whole memory if
none is known yet, in one batch (`read_back`). Measured here with hello-world templates on a
swap file: 34-50 MiB resident before, about 1.6 MiB after; 10-14 MiB with the hot set in (its
anonymous part 8.7-11.2); see `bench/wake.py --paged-runs`.

Nothing is paged out without swap. The host's swap is used when it has some; otherwise
`phemeral serve` (root) turns on a swap file of its own in the data dir
(``Settings.swap_file_mb``; sized by `swap_file_size_mb` when unset), and turns it off when
it stops without a successor. The file is root's, mode 0600: what apps kept is readable by
root only, as their memory is.

This module acts (``/proc``, syscalls, ``mkswap``/``swapon``); what to page out and when is
decided by `idle.templates_to_page_out`, which hot sets stay in by `idle.hot_sets_to_keep`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from phemeral.runtime import procs

log = logging.getLogger("phemeral.runtime")

PROC = Path("/proc")
MADV_WILLNEED = 3
MADV_PAGEOUT = 21
# Syscall numbers 424 and up are the same on every architecture Linux supports.
SYS_PIDFD_OPEN = 434
SYS_PROCESS_MADVISE = 440
IOV_MAX = 1024
SPECIAL = ("[vvar", "[vdso", "[vsyscall", "[uprobes")  # not pages of the process's own
SWAP_FILE = "swap"  # in the data dir
MIN_SWAP_MB = 256

# ioprio_set is older: its number differs by architecture.
SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())
SYS_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())
IOPRIO_WHO_PROCESS = 1  # with id 0: the calling thread
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13

PAGE = os.sysconf("SC_PAGE_SIZE")
Ranges = list[tuple[int, int]]  # (start, length), page-aligned, sorted
PACE_STEP = 8 << 20  # bytes of address space per paced call (see `Pacer`)
Pace = Callable[[], None]

_libc = ctypes.CDLL(None, use_errno=True)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def mappings(pid: int) -> list[tuple[int, int]]:
    """(start, length) of each mapping of ``pid`` that holds its own pages; [] once gone."""
    return [(start, length) for start, length, _ in _maps(pid)]


def _maps(pid: int) -> list[tuple[int, int, str]]:
    """(start, length, name) of the mappings of ``pid`` (``/proc/PID/maps``), the kernel's
    special ones (vdso, vvar, ...) left out; [] once gone."""
    try:
        text = (PROC / str(pid) / "maps").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        name = fields[5] if len(fields) > 5 else ""
        if name.startswith(SPECIAL):
            continue
        start, _, end = fields[0].partition("-")
        out.append((int(start, 16), int(end, 16) - int(start, 16), name))
    return out


def anonymous(pid: int) -> Ranges:
    """The mappings of ``pid`` that hold anonymous memory (heap, stack, ``mmap``'d areas):
    what only it holds, as opposed to pages of files shared through the page cache."""
    return [(start, length) for start, length, name in _maps(pid) if _is_anonymous(name)]


def file_backed(pid: int) -> Ranges:
    """The mappings of ``pid`` that map files (its binary, libraries, extension modules)."""
    return [(start, length) for start, length, name in _maps(pid) if not _is_anonymous(name)]


def _is_anonymous(name: str) -> bool:
    return not name or name.startswith(("[heap", "[stack", "[anon"))


def page_out_process(pid: int, ranges: Ranges | None = None, pace: Pace | None = None) -> int:
    """Ask the kernel to write out the pages of ``pid`` (all, or those within ``ranges``):
    bytes it went over; 0 if the process is gone. Without swap only its clean file pages
    can go. With ``pace``, in steps of `PACE_STEP` with ``pace()`` between them."""
    return _advise(pid, MADV_PAGEOUT, ranges, pace)


def read_back(pid: int, ranges: Ranges | None = None) -> int:
    """Start reading every page of ``pid`` (or those within ``ranges``) back from swap (and
    its files' pages), without waiting: one batch of reads, merged where its swap slots are
    adjacent (a page-out writes a template's pages together), instead of one read per page
    its fork touches. Blocking for the submission only (ms); bytes it went over."""
    return _advise(pid, MADV_WILLNEED, ranges)


def steps(ranges: Ranges, step: int) -> list[Ranges]:
    """``ranges`` cut into groups of at most ``step`` bytes each (and `IOV_MAX` ranges)."""
    out: list[Ranges] = []
    group: Ranges = []
    size = 0
    for start, length in ranges:
        while length > 0:
            take = min(length, step - size)
            group.append((start, take))
            size += take
            start, length = start + take, length - take
            if size >= step or len(group) >= IOV_MAX:
                out.append(group)
                group, size = [], 0
    if group:
        out.append(group)
    return out


def _advise(pid: int, advice: int, ranges: Ranges | None = None, pace: Pace | None = None) -> int:
    fd = _libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        return 0
    try:
        ranges = mappings(pid) if ranges is None else within(ranges, mappings(pid))
        if pace is None:
            groups = [ranges[i : i + IOV_MAX] for i in range(0, len(ranges), IOV_MAX)]
        else:
            groups = steps(ranges, PACE_STEP)
        done = 0
        for index, chunk in enumerate(groups):
            if pace is not None and index:
                pace()
            vec = (_Iovec * len(chunk))(*(_Iovec(start, size) for start, size in chunk))
            result = _libc.syscall(SYS_PROCESS_MADVISE, fd, vec, len(chunk), advice, 0)
            if result < 0:
                err = ctypes.get_errno()
                if err in (errno.ESRCH, errno.ENOMEM):  # exited, or a mapping went away
                    continue
                raise OSError(err, f"process_madvise of pid {pid}: {os.strerror(err)}")
            done += result
        return done
    finally:
        os.close(fd)


def present_ranges(pid: int) -> Ranges:
    """The pages of ``pid`` present in memory (anonymous and file-backed), as address ranges
    (``pagemap``; [] if the process is gone). For a template paged out and its forks: the
    pages they touched since (the hot set), since every other page is in swap or on disk."""
    return _pages(pid, mappings(pid), _PRESENT_BYTE)


def written_ranges(pid: int) -> Ranges:
    """The pages only ``pid`` maps (``pagemap`` bit 56, present): in a fork of a resident
    template, the template's pages it wrote to (copied on write) and its own new ones."""
    return _pages(pid, mappings(pid), _EXCLUSIVE_BYTE)


def touched_file_pages(pid: int) -> Ranges:
    """The file pages a fork of a resident template faulted in itself (``pagemap``, present):
    a fork copies no entries of read-only file mappings, so those present are the ones it
    touched (its libraries' and extension modules' code), shared with the template through
    the page cache and not found by `written_ranges`."""
    return _pages(pid, file_backed(pid), _PRESENT_BYTE)


def absent_within(pid: int, ranges: Ranges) -> Ranges:
    """The pages of ``ranges`` that ``pid`` maps but has not in memory: in swap, or file pages
    not faulted in (``pagemap``)."""
    return _pages(pid, within(ranges, mappings(pid)), _ABSENT_BYTE)


def swapped_within(pid: int, ranges: Ranges) -> Ranges:
    """The pages of ``ranges`` that ``pid`` has in swap (``pagemap`` bit 62)."""
    return _pages(pid, within(ranges, mappings(pid)), _SWAPPED_BYTE)


def within(ranges: Ranges, bounds: Iterable[tuple[int, int]]) -> Ranges:
    """The parts of sorted ``ranges`` that lie within sorted, disjoint ``bounds``."""
    out: Ranges = []
    bounds = list(bounds)
    i = 0
    for start, length in ranges:
        end = start + length
        while i < len(bounds) and bounds[i][0] + bounds[i][1] <= start:
            i += 1
        j = i
        while j < len(bounds) and bounds[j][0] < end:
            low, high = max(start, bounds[j][0]), min(end, bounds[j][0] + bounds[j][1])
            if low < high:
                out.append((low, high - low))
            j += 1
    return out


def _pages(pid: int, ranges: Ranges, flag: bytes) -> Ranges:
    """The runs of pages within ``ranges`` whose ``pagemap`` entry ``flag`` maps to 1. The
    top byte of each little-endian entry holds the present (63) and exclusive (56) bits:
    one byte per page, translated to 0/1, and runs found with ``bytes.find`` (C speed, for
    reserved areas of GBs too)."""
    out: Ranges = []
    try:
        pagemap = (PROC / str(pid) / "pagemap").open("rb")
    except OSError:
        return out
    with pagemap:
        for start, length in ranges:
            try:
                pagemap.seek(start // PAGE * 8)
                raw = pagemap.read(length // PAGE * 8)
            except OSError:
                continue
            flags = raw[7::8].translate(flag)
            index = flags.find(1)
            while index != -1:
                stop = flags.find(0, index)
                stop = len(flags) if stop == -1 else stop
                out.append((start + index * PAGE, (stop - index) * PAGE))
                index = flags.find(1, stop)
    return out


_PRESENT_BYTE = bytes(1 if b & 0x80 else 0 for b in range(256))  # bit 63
_ABSENT_BYTE = bytes(0 if b & 0x80 else 1 for b in range(256))
_SWAPPED_BYTE = bytes(1 if b & 0x40 else 0 for b in range(256))  # bit 62
_EXCLUSIVE_BYTE = bytes(1 if b & 0x81 == 0x81 else 0 for b in range(256))  # bits 63, 56


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted ranges with the overlapping and adjacent ones joined."""
    out: Ranges = []
    for start, length in sorted(ranges):
        if out and start <= out[-1][0] + out[-1][1]:
            last_start, last_length = out[-1]
            out[-1] = (last_start, max(last_length, start + length - last_start))
        else:
            out.append((start, length))
    return out


def bring_in(pid: int, ranges: Ranges, chunk: int = 1 << 20, pace: Pace | None = None) -> int:
    """Read the pages of ``ranges`` that ``pid`` maps but has not in memory
    (``process_vm_readv``): each is read back from swap or from its file and mapped in that
    process again, so its forks start with it. What a fork mapped alone in the hot set is not
    the template's and is left alone. Bytes read (blocking)."""
    ranges = absent_within(pid, ranges)
    buffer = ctypes.create_string_buffer(chunk)
    local = _Iovec(ctypes.cast(buffer, ctypes.c_void_p), chunk)
    done = unpaced = 0
    for start, length in ranges:
        offset = 0
        while offset < length:
            if pace is not None and unpaced >= PACE_STEP:
                pace()
                unpaced = 0
            size = min(chunk, length - offset)
            local.len = size
            remote = _Iovec(start + offset, size)
            result = _process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if result < 0:
                err = ctypes.get_errno()
                if err == errno.ESRCH:
                    return done
                break  # EFAULT: unmapped since; the rest of this range is skipped
            done += result
            unpaced += result
            offset += size
    return done


_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_ulong,
]


def page_out(pids: Iterable[int], pace: Pace | None = None) -> int:
    """`page_out_process` over ``pids`` (blocking: run it in a thread)."""
    return sum(page_out_process(pid, None, pace) for pid in pids)


def swap_traffic_pages() -> int:
    """Pages read from and written to swap since boot, host-wide (``pswpin`` + ``pswpout``)."""
    total = 0
    try:
        for line in (PROC / "vmstat").read_text().splitlines():
            if line.startswith(("pswpin ", "pswpout ")):
                total += int(line.split()[1])
    except OSError:
        pass
    return total


class Pacer:
    """Paces background paging (called between its steps, on its own thread): it waits while
    the foreground is busy (``busy()``: a wake is under way), at most ``hold`` s each time, and
    keeps the host's swap traffic under ``rate`` bytes/s. A mass page-out (hundreds of
    templates after a deploy or a restart) otherwise fills the disk's queue with gigabytes of
    writes, and a wake's reads, which must be submitted into the same queue, waited seconds
    behind them. Credit for quiet time is at most a ``window`` s of traffic."""

    def __init__(
        self,
        rate: float,
        busy: Callable[[], bool],
        *,
        hold: float = 2.0,
        window: float = 1.0,
        traffic: Callable[[], int] = swap_traffic_pages,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.busy = busy
        self.hold = hold
        self.window = window
        self._traffic = traffic
        self._clock = clock
        self._sleep = sleep
        self._since = clock()
        self._base = traffic()
        self.waited = 0.0  # s spent waiting, in all (for figures and tests)

    def __call__(self) -> None:
        start = self._clock()
        while self.busy() and self._clock() - start < self.hold:
            self._sleep(0.005)
        now = self._clock()
        moved = (self._traffic() - self._base) * PAGE
        ahead = moved / self.rate - (now - self._since)
        if ahead > 0:
            self._sleep(min(ahead, self.window))
            now = self._clock()
        if now - self._since >= self.window:
            self._since, self._base = now, self._traffic()
        self.waited += now - start


def lower_io_priority() -> bool:
    """Give this thread's disk reads and writes the idle I/O class: the block layer serves
    them when nothing else waits (and after a few seconds at the latest), so the swap traffic
    of background paging never queues ahead of a wake's reads. Whether it took (an unknown
    architecture, a refusing kernel: it keeps the default class)."""
    if SYS_IOPRIO_SET is None:
        return False
    value = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    return int(_libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, 0, value)) == 0


def io_priority_class() -> int | None:
    """This thread's I/O priority class (0: none set, the default; 3: idle); None: unknown."""
    if SYS_IOPRIO_GET is None:
        return None
    value = int(_libc.syscall(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, 0))
    return None if value < 0 else value >> IOPRIO_CLASS_SHIFT


def swap_free_kb() -> int:
    """Free swap on the host (kB); 0 without swap."""
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("SwapFree:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def active_swaps() -> list[Path]:
    try:
        lines = (PROC / "swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [Path(line.split()[0].replace("\\040", " ")) for line in lines if line.strip()]


def swap_file_size_mb(mem_total_kb: int, disk_free_kb: int) -> int:
    """The size of the swap file made when none is set: half the memory, at most an eighth of
    the free disk (a paged template keeps 17-35 MiB there: 24 GiB of memory and 80 GiB free
    give 10 GiB, about 300 paged templates; past that, templates stay resident); 0 (none)
    under `MIN_SWAP_MB`."""
    size = min(mem_total_kb // 2, disk_free_kb // 8) // 1024
    return size if size >= MIN_SWAP_MB else 0


def ensure_swap_file(data_dir: Path, size_mb: int | None) -> Path | None:
    """Turn on the data dir's swap file (made first if needed) unless the host has swap of its
    own or ``size_mb`` is 0; the file in use, else None. Blocking; never raises: without swap
    the paged tier is off, which is logged."""
    path = data_dir / SWAP_FILE
    active = active_swaps()
    if path in active:
        return path  # ours, from before an upgrade
    if active or size_mb == 0:
        return None
    if os.geteuid() != 0:
        return None
    if size_mb is None:
        stat = os.statvfs(data_dir)
        size_mb = swap_file_size_mb(
            procs.mem_total_kb() or 0, stat.f_bavail * stat.f_frsize // 1024
        )
        if size_mb == 0:
            log.info("no swap file: too little memory or disk for one; the paged tier is off")
            return None
    try:
        size = size_mb * 1024 * 1024
        if not path.exists() or path.stat().st_size != size:
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            subprocess.run(["mkswap", str(path)], check=True, capture_output=True, timeout=60)
        path.chmod(0o600)
        subprocess.run(["swapon", str(path)], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning(
            "could not turn on the swap file %s (%s%s): the paged tier is off",
            path,
            exc,
            f": {detail.decode(errors='replace').strip()}" if detail else "",
        )
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    log.info("swap file %s (%d MiB) on: dormant templates page out to it", path, size_mb)
    return path


def release_swap_file(path: Path) -> None:
    """Turn the swap file off (its pages come back to memory first); blocking."""
    try:
        subprocess.run(["swapoff", str(path)], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not turn off the swap file %s: %s", path, exc)
