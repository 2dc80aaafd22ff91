"""The vocabulary shared by every stage, as plain immutable values (no I/O here).

Glossary (also in docs/architecture.md):

- **Project**: a named app people deploy; has environments, settings, a repository.
- **Environment**: a named target inside a project (``production`` first); has branches mapped
  to it, domains, variables, and a *current* deployment.
- **Deployment**: one version of the code in one environment; status ``building`` →
  ``successful`` | ``failed``. Its id is a DNS label and its own domain.
- **Build**: the work that turns a deployment's source into a release (detect, install, verify).
- **Release**: the immutable, runnable result of a build: source + venv + start command + env.
- **Instance**: one running process set of a release (scaled to zero = no instance).
- **Domain**: a host name that routes to a deployment (its own) or to an environment's current.

The contracts between stages live here too: `BuildJob` → builder → `BuildResult` (with its
`Release`) → runtime → `Upstream` for the router.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol


class DeploymentStatus(StrEnum):
    BUILDING = "building"
    SUCCESSFUL = "successful"
    FAILED = "failed"


class TriggerKind(StrEnum):
    PUSH = "push"
    MANUAL = "manual"


class StartCommandSource(StrEnum):
    """Where a deployment's start command came from (highest precedence first)."""

    CUSTOM = "custom"  # the project's saved custom command
    PHEMERAL_TOML = "phemeral.toml"
    PROCFILE = "procfile"
    RAILWAY_JSON = "railway.json"
    RAILWAY_TOML = "railway.toml"
    RENDER_YAML = "render.yaml"
    HEROKU_YML = "heroku.yml"
    AUTODETECTED = "autodetected"

    @property
    def declared(self) -> bool:
        """Declared by the repository (a file in it), not saved on the project nor detected."""
        return self not in (StartCommandSource.CUSTOM, StartCommandSource.AUTODETECTED)


@dataclass(frozen=True)
class AppSpec:
    """How the autodetected default command serves the app; lets the runtime pre-load it.

    ``target`` is ``module:attribute`` (``module:factory`` when ``factory``), importable from the
    release's working directory; ``interface`` picks the server (ASGI → uvicorn, WSGI → gunicorn).
    """

    framework: Literal["fastapi", "flask", "django"]
    interface: Literal["asgi", "wsgi"]
    target: str
    factory: bool = False
    server: Literal["uvicorn", "gunicorn", "hypercorn", "granian", "daphne"] = "uvicorn"
    django_settings_module: str | None = None


@dataclass(frozen=True)
class Release:
    """An immutable, runnable artifact; written as ``release.json`` inside ``path``.

    ``path`` is the release directory (built in place, never moved, since venvs are not
    relocatable): it holds ``src/`` (the project source), ``.venv/`` and ``release.json``.
    ``workdir`` is the project root inside ``src/``; the start command runs there with
    ``.venv/bin`` first on PATH and ``$PORT`` set. ``app`` is None for custom commands.
    """

    deployment_id: str
    project: str
    environment: str
    path: Path
    workdir: Path
    venv: Path
    python_version: str
    start_command: str
    start_command_source: StartCommandSource
    app: AppSpec | None
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None  # host uid the app runs as (None: the platform's own, non-root only)
    lock_hash: str | None = None  # hash of the resolved dependency set, shared across releases
    allow: tuple[Endpoint, ...] = ()  # host-side endpoints its sandbox may reach (services)
    release_command: str | None = None  # run once per deployment before it serves
    release_command_source: str | None = None  # "procfile", "phemeral.toml", …
    release_timeout: float | None = None  # None: the platform's setting
    processes: Mapping[str, str] = field(default_factory=dict)  # extra processes: name → command
    health_check_path: str = "/"  # what the boot check requests
    idle_timeout: float | None = None  # None: the platform's setting


@dataclass(frozen=True)
class ArchiveSource:
    """A gzipped tar uploaded by `phemeral deploy`, waiting at ``path``."""

    path: Path


@dataclass(frozen=True)
class GitSource:
    """A commit of a repository; ``token`` (if any) authenticates https fetches."""

    url: str
    commit: str
    token: str | None = None
    # Commits (the environment's current and recent pushes) whose history relation to
    # ``commit`` the build reports, so promotion follows the commit graph, not clocks.
    compare: tuple[str, ...] = ()


class CommitRelation(StrEnum):
    """How a built commit relates to another commit of the same repository."""

    SAME = "same"
    DESCENDANT = "descendant"  # the built commit has the other one in its history
    ANCESTOR = "ancestor"  # the built commit is in the other one's history (an older push)
    UNRELATED = "unrelated"  # neither (a force push to another history)
    UNKNOWN = "unknown"  # the other commit could not be fetched


@dataclass(frozen=True)
class ProjectOverrides:
    """Project settings that win over detection."""

    root_dir: str | None = None
    python_version: str | None = None
    package_manager: str | None = None


@dataclass(frozen=True)
class BuildJob:
    """Everything the builder needs for one deployment; it never reads the database."""

    deployment_id: str
    project: str
    environment: str
    source: ArchiveSource | GitSource
    overrides: ProjectOverrides
    custom_start_command: str | None
    env: Mapping[str, str]
    release_dir: Path  # where the release is built in place
    uid: int | None = None
    timeout: float | None = None  # seconds; None: the server's build_timeout
    allow: tuple[Endpoint, ...] = ()  # the backing services its variables point at


class BuildLog(Protocol):
    """Where the builder writes its stage lines; the sink stamps each with the time."""

    def write(self, stage: str, message: str) -> None: ...


@dataclass(frozen=True)
class BuildResult:
    release: Release
    detection: Mapping[str, object]  # the JSON `phemeral detect --json` prints, plus sources
    ancestry: Mapping[str, CommitRelation] = field(default_factory=dict)  # by other commit


@dataclass(frozen=True, slots=True)  # one per log line: small and quick to build
class BuildLogLine:
    deployment_id: str
    stage: str
    timestamp: datetime
    message: str


LogStream = Literal["stdout", "stderr", "router", "system"]


@dataclass(frozen=True, slots=True)  # one per log line: small and quick to build
class RuntimeLogLine:
    deployment_id: str
    instance: str
    stream: LogStream
    timestamp: datetime
    message: str


class RuntimeLogSink(Protocol):
    """Receives runtime log lines in batches; must not block for long."""

    def write(self, lines: list[RuntimeLogLine]) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """A TCP address on the host side that a sandbox may reach (its allow-list, see
    `phemeral.network`): backing services listen on ``phemeral.network.GATEWAY``."""

    host: str
    port: int


@dataclass(frozen=True)
class Upstream:
    """Where the router sends a deployment's requests: a TCP address or a Unix socket path."""

    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None


@dataclass(frozen=True)
class ProcessState:
    """One extra process (``worker``, ``clock``, …) of a deployment, as the runtime sees it."""

    name: str
    command: str
    state: Literal["starting", "running", "backoff", "stopping", "stopped"]
    restarts: int = 0
    last_exit: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class InstanceState:
    """Process state of a deployment, reported apart from its status (never changes it)."""

    instances: int  # running instance sets (0 = scaled to zero)
    state: Literal["stopped", "dormant", "starting", "running", "stopping", "crashed", "backoff"]
    # what stays when idle: a template (memory resident, or paged out to swap), or none
    tier: Literal["none", "template", "paged", "running"] = "none"
    idle_memory_kb: int = 0  # memory only its dormant template holds (USS), tier template
    # what it keeps while scaled to zero: PSS of its processes plus its share of a shared
    # template (`runtime.footprint`), tier template; 0 running or on the deep tier
    idle_pss_kb: int = 0
    idle_swap_kb: int = 0  # what those processes keep in swap instead (tier paged)
    # tier paged: the pages a wake touches (its hot set) are kept in memory, so it wakes as
    # fast as from the template tier
    hot_set_in: bool = False
    expected_wake_ms: float | None = None  # from its tier (recent wakes); None while running
    last_wake_at: datetime | None = None
    last_wake_ms: float | None = None
    # where the last wake's time went, to its first answer (`runtime.waketrace`): phase → ms
    last_wake_phases: dict[str, float] | None = None
    restarts: int = 0
    last_exit: str | None = None
    # How a wake starts it: forked from a pre-loaded template (milliseconds) or by running the
    # start command as given (a cold start); None when the runtime does not know it.
    wake_path: Literal["template", "command"] | None = None
    processes: tuple[ProcessState, ...] = ()  # extra processes (current deployments only)


@dataclass(frozen=True)
class DeploymentRoute:
    """What the router needs to know about one deployment."""

    status: DeploymentStatus
    project: str
    environment: str


@dataclass(frozen=True)
class RoutingSnapshot:
    """Every routable name at one moment; the control plane publishes a new one on each change.

    ``domains`` maps an environment domain label (``my-api-production``, custom subdomains) to
    the environment's current deployment id, or None while it has none.
    """

    base_domain: str
    deployments: Mapping[str, DeploymentRoute]
    domains: Mapping[str, str | None]
    # full host names attached to an environment (``shop.example.com``) → its current deployment
    custom_domains: Mapping[str, str | None] = field(default_factory=dict)
    # full host name → what the router does about HTTPS for it (absent: nothing)
    policies: Mapping[str, HostPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """HTTPS behaviour of one environment host, decided by the control plane.

    ``https_redirect`` is only ever true when the host has a valid certificate and its
    environment did not turn the redirect off; ``hsts_max_age`` > 0 adds
    ``Strict-Transport-Security`` to responses sent over HTTPS.
    """

    https_redirect: bool = False
    hsts_max_age: int = 0


@dataclass(frozen=True)
class TlsCertificate:
    """A certificate the router may serve: PEM chain (leaf first) and PEM private key.

    ``names`` are exact host names or one-label wildcards (``*.example.com``).
    """

    names: tuple[str, ...]
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    not_after: datetime
