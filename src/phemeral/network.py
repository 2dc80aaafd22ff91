"""A network namespace per sandbox: the public internet, nothing of the host or other tenants.

Every app sandbox (a deployment's processes, a project's shared template) and every build gets
its own namespace with a loopback and one veth pair:

    host  phm<slot>  10.213.X.1/30   <->   eth0  10.213.X.2/30  (inside; default route via .1)

The host side is filtered by one nftables table per platform process
(``inet phemeral_<data-dir digest>_<pid>_<start>``; `host_ruleset`):

- input (packets for the host itself) from a sandbox: only replies, the allow-list
  (``namespace address . host address . port``, see `Endpoint`) and DNS to a resolver that is a
  host address; everything else is refused (TCP reset / ICMP prohibited). The host's loopback
  is out of reach by construction: 127.0.0.1 inside is the namespace's own loopback.
- forward (everywhere else): replies, the allow-list, DNS to the resolvers of
  ``/etc/resolv.conf``; refused: private, shared, link-local, loopback, multicast and reserved
  ranges (other sandboxes included), the host's connected subnets, all IPv6; the rest (the
  public internet) leaves through NAT. Nothing from outside may open a connection into a
  sandbox.
- output: only root (the platform: router, readiness checks) opens connections into sandboxes.

Inside, a DNAT rule sends every TCP connection arriving on ``eth0`` to 127.0.0.1 (with
``route_localnet``), so an app is reachable at ``<address>:$PORT`` from the host whether it
bound 0.0.0.0 or 127.0.0.1; the template tier does not even need that (the runtime passes it a
listening socket bound on the host).

Backing services listen on `GATEWAY` (an address on the host's ``lo``, the same for every
platform on the machine); a sandbox reaches ``GATEWAY:port`` only when its allow-list says so.

Names and addresses never collide across platform processes: a slot (the /30 and the names
``phm-<slot>`` / ``phm<slot>``) is claimed by creating ``/run/phemeral/net/slots/<slot>``
under a host-wide lock; a slot (and an nft table) whose owner process is gone is reclaimed, so a
restart removes what a crashed run left. `Networks.close` removes everything of its own.

Requires root, ``ip`` (iproute2), ``nft`` (nftables), ``nsenter``; `unavailable_reason` says
what is missing (the caller decides: shared host network with a warning, or refuse).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from phemeral.errors import ConfigError
from phemeral.models import Endpoint

log = logging.getLogger(__name__)

POOL = ipaddress.IPv4Network("10.213.0.0/16")
GATEWAY = str(POOL.network_address + 1)  # slot 0's first address, on the host's lo
SLOTS = POOL.num_addresses // 4  # /30 each; slot 0 is the gateway's
STATE_DIR = Path("/run/phemeral/net")
NETNS_DIR = Path("/run/netns")
TABLE_PREFIX = "phemeral_"
# Never reachable from a sandbox (except what the allow-list or DNS rule admits first).
DENIED_RANGES = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private (other sandboxes: the pool is inside)
    "100.64.0.0/10",  # shared address space (carrier NAT, overlay VPNs)
    "127.0.0.0/8",  # loopback (never routed, listed for clarity)
    "169.254.0.0/16",  # link-local (cloud metadata services)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/3",  # multicast and reserved
)


class NetworkUnavailable(ConfigError):
    """Network namespaces cannot be made here (not root, a tool missing, the kernel refuses)."""


@dataclass(frozen=True)
class Netns:
    """One sandbox's network namespace."""

    slot: int
    name: str  # ip netns name (``/run/netns/<name>``)
    veth: str  # host side interface
    host_address: str  # host side of the /30
    address: str  # the sandbox's own address: where the host reaches its listeners
    allow: tuple[Endpoint, ...] = ()

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name


# -- pure parts ---------------------------------------------------------------------------------


def slot_names(slot: int) -> tuple[str, str]:
    """(netns name, host veth name) of a slot; the veth name fits IFNAMSIZ (15)."""
    return f"phm-{slot}", f"phm{slot}"


def slot_addresses(slot: int) -> tuple[str, str]:
    """(host side, sandbox side) addresses of a slot's /30."""
    if not 0 < slot < SLOTS:
        raise ValueError(f"slot {slot} outside 1..{SLOTS - 1}")
    base = POOL.network_address + 4 * slot
    return str(base + 1), str(base + 2)


def resolvers(resolv_conf: str) -> list[str]:
    """The IPv4 name servers of a resolv.conf text."""
    found: list[str] = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(parts[1]).version == 4 and parts[1] not in found:
                    found.append(parts[1])
    return found


def check_endpoints(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Validated allow-list entries: IPv4 literals and ports 1..65535."""
    out: list[Endpoint] = []
    for endpoint in endpoints:
        try:
            address = ipaddress.IPv4Address(endpoint.host)
        except ValueError as exc:
            raise ConfigError(f"allowed endpoint {endpoint.host!r} is not an IPv4 address") from exc
        if not 0 < endpoint.port < 65536:
            raise ConfigError(f"allowed endpoint port {endpoint.port} is out of range")
        out.append(Endpoint(str(address), endpoint.port))
    return tuple(dict.fromkeys(out))


def _set(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def host_ruleset(table: str, nameservers: Sequence[str], connected: Sequence[str]) -> str:
    """The platform's nft table (an atomic ``nft -f`` script; re-running it starts afresh)."""
    denied = [*DENIED_RANGES, *connected]
    dns = (
        f"        ip daddr {_set(nameservers)} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        if nameservers
        else ""
    )
    refuse = (
        "        meta l4proto tcp reject with tcp reset\n"
        "        reject with icmpx type admin-prohibited\n"
    )
    return f"""table inet {table}
delete table inet {table}
table inet {table} {{
    set veths {{ type ifname; }}
    set addrs {{ type ipv4_addr; }}
    set allow {{ type ipv4_addr . ipv4_addr . inet_service; }}
    set denied {{ type ipv4_addr; flags interval; auto-merge; elements = {_set(denied)} }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname != @veths accept
        ct state established,related accept
        ip saddr . ip daddr . tcp dport @allow accept
{dns}{refuse}    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        oifname @veths ct state established,related accept
        oifname @veths ct state new reject with icmpx type admin-prohibited
        iifname != @veths accept
        ct state established,related accept
        ip saddr . ip daddr . tcp dport @allow accept
{dns}        meta nfproto ipv6 reject with icmpx type admin-prohibited
        ip daddr @denied meta l4proto tcp reject with tcp reset
        ip daddr @denied reject with icmpx type admin-prohibited
        accept
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname @veths ct state new meta skuid != 0 meta l4proto tcp reject with tcp reset
        oifname @veths ct state new meta skuid != 0 reject with icmpx type admin-prohibited
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @addrs oifname != @veths masquerade
    }}
}}
"""


def inner_ruleset() -> str:
    """Inside a namespace: TCP arriving from the host goes to the app's loopback listener too."""
    return """table ip phemeral {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "eth0" meta l4proto tcp dnat to 127.0.0.1
    }
}
"""


def create_script(ns: Netns, table: str) -> str:
    """Shell commands that make ``ns`` and register it in ``table`` (run as root, ``set -e``)."""
    q = shlex.quote
    host_batch = "\n".join(
        [
            f"netns add {ns.name}",
            f"link add {ns.veth} type veth peer name eth0 netns {ns.name}",
            f"addr add {ns.host_address}/30 dev {ns.veth}",
            f"link set {ns.veth} up",
        ]
    )
    inner_batch = "\n".join(
        [
            "link set lo up",
            f"addr add {ns.address}/30 dev eth0",
            "link set eth0 up",
            f"route add default via {ns.host_address}",
        ]
    )
    inside = (
        "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet\n"
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6\n"
        f"ip -batch - <<'EOF'\n{inner_batch}\nEOF\n"
        f"nft -f - <<'EOF'\n{inner_ruleset()}EOF\n"
    )
    rules = [
        f"add element inet {table} veths {{ {ns.veth} }}",
        f"add element inet {table} addrs {{ {ns.address} }}",
        *(
            f"add element inet {table} allow {{ {ns.address} . {e.host} . {e.port} }}"
            for e in ns.allow
        ),
    ]
    return (
        "set -e\n"
        f"ip -batch - <<'EOF'\n{host_batch}\nEOF\n"
        f"ip netns exec {q(ns.name)} sh -ec {q(inside)}\n"
        f"nft -f - <<'EOF'\n" + "\n".join(rules) + "\nEOF\n"
    )


def remove_script(slot: int, table: str | None, address: str | None) -> str:
    """Commands that remove a slot's interfaces, namespace and table elements (errors ignored)."""
    name, veth = slot_names(slot)
    lines = [f"ip link del {veth} 2>/dev/null", f"ip netns del {name} 2>/dev/null"]
    if table is not None:
        lines.append(f"nft delete element inet {table} veths {{ {veth} }} 2>/dev/null")
        if address is not None:
            lines.append(f"nft delete element inet {table} addrs {{ {address} }} 2>/dev/null")
    return "\n".join(f"{line} || true" for line in lines) + "\n"


def allow_script(table: str, address: str, old: Sequence[Endpoint], new: Sequence[Endpoint]) -> str:
    """One nft transaction replacing a namespace's allow-list elements."""
    lines = [
        f"delete element inet {table} allow {{ {address} . {e.host} . {e.port} }}" for e in old
    ]
    lines += [f"add element inet {table} allow {{ {address} . {e.host} . {e.port} }}" for e in new]
    return "\n".join(lines) + "\n"


_OWNER = re.compile(r"^[0-9a-f]{8}_(\d+)_(\d+)$")


def owner_alive(owner: str, stat_of: Callable[[int], str | None] | None = None) -> bool:
    """Whether the platform process named by ``owner`` (``digest_pid_starttime``) still runs."""
    match = _OWNER.match(owner)
    if match is None:
        return False
    pid, start = int(match.group(1)), match.group(2)
    read = stat_of or _proc_start_time
    return read(pid) == start


# -- the machine --------------------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "the platform is not root"
    for tool in ("ip", "nft", "nsenter"):
        if _which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap installs iproute2 and nftables)"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespaces"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


def _sh(script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    result = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    if check and result.returncode != 0:
        raise NetworkUnavailable(f"network set-up failed: {result.stderr.strip()[-500:]}")
    return result


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    (STATE_DIR / "slots").mkdir(exist_ok=True, mode=0o700)
    with (STATE_DIR / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _connected_subnets() -> list[str]:
    """The host's directly connected IPv4 subnets, except the pool's own."""
    result = _sh("ip -4 -o route show scope link", check=False)
    found: list[str] = []
    for line in result.stdout.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            net = ipaddress.IPv4Network(line.split()[0], strict=False)
            if not net.subnet_of(POOL) and str(net) not in found:
                found.append(str(net))
    return found


class Networks:
    """The namespaces of one platform process (one data dir); see the module docstring."""

    def __init__(self, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        pid = os.getpid()
        self.owner = f"{digest}_{pid}_{_proc_start_time(pid)}"
        self.table = TABLE_PREFIX + self.owner
        self._own: dict[int, Netns] = {}
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.started = False

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Reclaim what dead platforms left, then install this platform's table (idempotent)."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetworkUnavailable(f"no network namespaces: {reason}")
        with self._start_lock:
            if not self.started:
                self._start()

    def _start(self) -> None:
        with _host_lock():
            self._collect_leftovers()
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
            nameservers = resolvers(_read("/etc/resolv.conf"))
            ruleset = host_ruleset(self.table, nameservers, _connected_subnets())
            gateway = (
                f"ip -4 addr show dev lo | grep -q ' {GATEWAY}/' "
                f"|| ip addr add {GATEWAY}/32 dev lo\n"
            )
            _sh(gateway + f"nft -f - <<'EOF'\n{ruleset}EOF\n")
        self.started = True

    def close(self) -> None:
        """Remove every namespace of this platform and its table."""
        for ns in list(self._own.values()):
            self.remove(ns)
        if self.started:
            _sh(f"nft delete table inet {self.table} 2>/dev/null || true", check=False)
        self.started = False

    def _collect_leftovers(self) -> None:
        """Slots and tables whose owner process is gone (called under the host lock)."""
        slots = STATE_DIR / "slots"
        script = ""
        for path in slots.iterdir():
            if not path.name.isdigit():
                continue
            owner = _read(str(path)).strip()
            if owner_alive(owner):
                continue
            script += remove_script(int(path.name), None, None)
            path.unlink(missing_ok=True)
        listed = _sh("nft list tables inet", check=False).stdout
        for table in re.findall(r"table inet (" + TABLE_PREFIX + r"\S+)", listed):
            if not owner_alive(table.removeprefix(TABLE_PREFIX)):
                script += f"nft delete table inet {table} 2>/dev/null || true\n"
        if script:
            _sh(script, check=False)

    # -- namespaces -------------------------------------------------------------------------

    def create(self, allow: Iterable[Endpoint] = ()) -> Netns:
        """A new namespace with its veth, addresses, rules and ``allow``-list."""
        if not self.started:
            self.start()
        endpoints = check_endpoints(allow)
        with _host_lock():
            slot = self._claim()
        name, veth = slot_names(slot)
        host_address, address = slot_addresses(slot)
        ns = Netns(slot, name, veth, host_address, address, endpoints)
        try:
            _sh(remove_script(slot, None, None), check=False)  # a veth of a crashed run
            _sh(create_script(ns, self.table))
        except BaseException:
            self._release(ns)
            raise
        with self._lock:
            self._own[slot] = ns
        return ns

    def _claim(self) -> int:
        slots = STATE_DIR / "slots"
        for slot in range(1, SLOTS):
            path = slots / str(slot)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                if owner_alive(_read(str(path)).strip()):
                    continue
                path.unlink(missing_ok=True)  # its owner died: reclaimed
                _sh(remove_script(slot, None, None), check=False)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.owner + "\n")
            return slot
        raise NetworkUnavailable(f"all {SLOTS - 1} network slots are in use")

    def set_allow(self, ns: Netns, allow: Iterable[Endpoint]) -> Netns:
        """Replace the allow-list of a live namespace (one nft transaction)."""
        endpoints = check_endpoints(allow)
        script = allow_script(self.table, ns.address, ns.allow, endpoints)
        if script.strip():
            _sh(f"nft -f - <<'EOF'\n{script}EOF\n")
        updated = Netns(ns.slot, ns.name, ns.veth, ns.host_address, ns.address, endpoints)
        with self._lock:
            if ns.slot in self._own:
                self._own[ns.slot] = updated
        return updated

    def remove(self, ns: Netns) -> None:
        """Remove the namespace (its processes should be gone), its veth and rules."""
        with self._lock:
            current = self._own.get(ns.slot, ns)
        script = remove_script(ns.slot, self.table, ns.address)
        if current.allow:
            script += (
                "nft -f - <<'EOF' 2>/dev/null || true\n"
                + allow_script(self.table, ns.address, current.allow, ())
                + "EOF\n"
            )
        _sh(script, check=False)
        self._release(ns)

    def _release(self, ns: Netns) -> None:
        with self._lock:
            self._own.pop(ns.slot, None)
        with _host_lock():
            path = STATE_DIR / "slots" / str(ns.slot)
            if _read(str(path)).strip() == self.owner:
                path.unlink(missing_ok=True)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


_registry: dict[str, Networks] = {}
_registry_lock = threading.Lock()


def for_data_dir(data_dir: Path) -> Networks:
    """This process's `Networks` for a data dir (one table per platform; started on first use)."""
    key = str(data_dir.resolve())
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            found = _registry[key] = Networks(key)
        return found


def resolve(setting: str, data_dir: Path) -> Networks | None:
    """The ``network`` setting as a decision: this data dir's `Networks` (started), or None
    (the host's network, logged loudly); ``isolated`` raises when namespaces are unavailable."""
    if setting == "host":
        log.warning("network = host: apps and builds share the host's network (no isolation)")
        return None
    networks = for_data_dir(data_dir)
    try:
        if not networks.started:
            networks.start()
    except NetworkUnavailable as exc:
        if setting == "isolated":
            raise
        _warn_shared(str(exc))
        return None
    return networks


@functools.lru_cache(maxsize=4)
def _warn_shared(reason: str) -> None:
    log.warning(
        "%s: apps and builds share the host's network and can reach its loopback services; "
        "run as root with iproute2 and nftables (scripts/bootstrap) to isolate them",
        reason,
    )


def close_for_data_dir(data_dir: Path) -> None:
    """Remove every namespace and the table of a data dir's `Networks` (platform shutdown)."""
    key = str(data_dir.resolve())
    with _registry_lock:
        found = _registry.pop(key, None)
    if found is not None:
        found.close()
