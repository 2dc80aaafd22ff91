"""Platform configuration, read once into a frozen `Settings`.

This is the only module that reads `os.environ`. `load_settings` takes the environment and the
command-line overrides as arguments, validates every value and names the key in its error, so
the rest of the code receives plain typed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from phemeral.errors import ConfigError, InvalidInput

ENV_PREFIX = "PHEMERAL_"
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """XDG data home on Linux: ``$XDG_DATA_HOME/phemeral`` or ``~/.local/share/phemeral``."""
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path(environ.get("HOME", "/root")) / ".local" / "share"
    return base / "phemeral"


@dataclass(frozen=True)
class Settings:
    """Everything `phemeral serve` needs to know, validated."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    base_domain: str = "phemeral.localhost"
    database_url: str | None = None  # None: SQLite file in data_dir
    idle_timeout: float = 300.0  # seconds without requests before instances stop
    boot_timeout: float = 60.0  # seconds a new instance has to answer on $PORT
    build_timeout: float = 300.0  # wall-clock limit of one build; a project may raise its own
    release_timeout: float = 900.0  # default limit of a release command (phemeral.toml may set)
    max_build_timeout: float = 3600.0  # the most a project may raise it to
    build_concurrency: int = 4  # builds running at once (one per project); the rest wait
    build_memory_mb: int = 4096
    build_cpus: float = 1.0  # CPU quota of one build (cgroup), in CPUs
    build_disk_mb: int = 4096  # disk quota of one build's release folder (loop-mounted ext4)
    keep_releases: int = 5  # per project, besides every environment's current and the pinned
    app_memory_mb: int = 512  # per instance
    app_pids_max: int = 256
    max_upload_mb: int = 200
    allow_local_repos: bool = False  # git sources from local paths / file:// URLs
    python_paths: tuple[Path, ...] = ()  # extra interpreters or folders to search
    install_missing_python: bool = False  # let uv install a missing interpreter
    sandbox: str = "auto"  # auto | bwrap | none
    # auto: a network namespace per app and build when possible (root, ip, nft), else the host's
    # network with a warning; isolated: refuse to start without namespaces; host: always shared
    network: str = "auto"
    runtime_log_cap: int = 20_000  # runtime log lines kept per deployment
    github_api_url: str = "https://api.github.com"
    # The platform's GitHub App (its id and the .pem GitHub generated for it): projects then
    # need no token of their own, only the App installed on their repository.
    github_app_id: int | None = None
    github_app_key_file: Path | None = None
    log_level: str = "info"  # debug | info | warning | error (the platform's own log)
    https_port: int | None = None  # the router's TLS listener; None: plain HTTP only
    tls_cert: Path | None = None  # a wildcard for the base domain (PEM chain), with tls_key
    tls_key: Path | None = None
    acme_directory: str = LETSENCRYPT  # where certificates for custom domains come from
    acme_email: str | None = None  # the ACME account's contact
    acme_ca_bundle: Path | None = None  # CA file trusted for the ACME server's own HTTPS
    acme_retry_seconds: float = 300.0  # first retry after a failed issuance (doubles, ≤ 1 day)
    # Backing services: None runs the embedded PostgreSQL cluster in the data dir on demand;
    # a postgresql:// URL of a role with CREATEROLE + CREATEDB provisions into that server.
    postgres_admin_url: str | None = None
    # where services listen and apps reach them; auto: the network gateway when apps have
    # namespaces of their own, else 127.0.0.1 (phemeral.services.endpoint)
    services_host: str = "auto"
    redis_maxmemory_mb: int = 64  # per Redis service
    preview_limit: int = 10  # open pull-request previews per project; the oldest idle suspended
    router_processes: int = 1  # routers on the public port (SO_REUSEPORT when more than one)
    # What resident dormant templates may keep together (MB, PSS): past it the least recently
    # used go to the paged tier while swap holds them, else drop to the deep tier; after a
    # start, templates of the most recently used deployments are loaded again in the
    # background up to it (and past it into swap). None: half of the host's memory; 0: no
    # template stays resident once its deployment scales to zero (and none is warmed).
    warm_budget_mb: int | None = None
    # A dormant template unused this long (s) has its memory paged out to swap (the paged
    # tier: a wake reads back what it touches, tens of ms); 0: never.
    page_out_after: float = 300.0
    # What a paged template keeps resident (MB of its own, anonymous pages, at most): the
    # pages it and its last fork touched (the hot set), so a wake starts as from a resident
    # template; 0: all of it paged out (least memory, a slower wake: the template's memory is
    # read back first).
    hot_set_mb: int = 12
    # What the hot sets of all paged templates keep together (MB): the most recently used
    # deployments' first. None: a quarter of the host's memory.
    hot_set_budget_mb: int | None = None
    # A dormant template whose hot set is not known yet (after a restart, a deploy, a
    # template never woken since its memory was written out) gets one request no user sent
    # (a rehearsal: GET of its health-check path, in an instance stopped right after), so the
    # first wake a user asks for after a long idle reads back only what it needs. Off: that
    # first wake reads the template's whole memory back (tens of ms more).
    rehearse: bool = True
    # The swap the paged tier writes to: the host's when it has some; else `phemeral serve`
    # (as root) turns on a swap file of this size in the data dir. None: half the memory, at
    # most an eighth of the free disk; 0: none (no paged tier without host swap).
    swap_file_mb: int | None = None

    @property
    def database_uri(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'phemeral.db'}"

    @property
    def _origin_parts(self) -> tuple[str, str]:
        """Scheme and port suffix of the platform's own names: HTTPS when a certificate for
        the base domain is supplied (``--tls-cert``), else plain HTTP."""
        if self.https_port is not None and self.tls_cert is not None:
            return "https", "" if self.https_port == 443 else f":{self.https_port}"
        return "http", "" if self.port in (80, 443) else f":{self.port}"

    @property
    def base_url(self) -> str:
        """The dashboard and API: the base domain itself."""
        scheme, port = self._origin_parts
        return f"{scheme}://{self.base_domain}{port}"

    def url_for_label(self, label: str) -> str:
        """The public URL of a deployment or environment domain label."""
        scheme, port = self._origin_parts
        return f"{scheme}://{label}.{self.base_domain}{port}"


_CASTS: dict[str, Any] = {
    "log_level": lambda raw: str(raw).strip().lower(),
    "data_dir": Path,
    "host": str,
    "port": int,
    "base_domain": str,
    "database_url": str,
    "idle_timeout": float,
    "boot_timeout": float,
    "build_timeout": float,
    "release_timeout": float,
    "max_build_timeout": float,
    "build_concurrency": int,
    "build_memory_mb": int,
    "build_cpus": float,
    "build_disk_mb": int,
    "keep_releases": int,
    "app_memory_mb": int,
    "app_pids_max": int,
    "max_upload_mb": int,
    "runtime_log_cap": int,
    "github_api_url": str,
    "github_app_id": int,
    "github_app_key_file": Path,
    "preview_limit": int,
    "sandbox": str,
    "https_port": int,
    "tls_cert": Path,
    "tls_key": Path,
    "acme_directory": str,
    "acme_email": str,
    "acme_ca_bundle": Path,
    "acme_retry_seconds": float,
    "postgres_admin_url": str,
    "services_host": str,
    "redis_maxmemory_mb": int,
    "router_processes": int,
    "network": str,
    "warm_budget_mb": int,
    "page_out_after": float,
    "hot_set_mb": int,
    "hot_set_budget_mb": int,
    "swap_file_mb": int,
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _cast(key: str, raw: object) -> object:
    if key in ("allow_local_repos", "install_missing_python", "rehearse"):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{ENV_PREFIX}{key.upper()} must be true or false, not {raw!r}")
    if key == "python_paths":
        if isinstance(raw, tuple):
            return raw
        return tuple(Path(p) for p in str(raw).split(os.pathsep) if p)
    cast = _CASTS[key]
    try:
        return cast(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{ENV_PREFIX}{key.upper()} has an invalid value {raw!r}") from exc


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Build `Settings` from ``PHEMERAL_*`` variables, then command-line overrides (which win).

    Overrides whose value is None are ignored, so CLI options can pass their defaults through.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    names = {f.name for f in fields(Settings)}
    for name in names:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _cast(name, raw)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in names:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _cast(name, value)
    values.setdefault("data_dir", default_data_dir(env))
    settings = Settings(**values)  # type: ignore[arg-type]
    return validate(settings)


LOG_LEVELS = ("debug", "info", "warning", "error")


def validate(settings: Settings) -> Settings:
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level {settings.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    """Check ranges and formats; return the settings with normalised values."""
    if not 0 < settings.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {settings.port}")
    base = settings.base_domain.strip().lower().rstrip(".")
    labels = base.split(".")
    if not base or any(not lab or len(lab) > 63 for lab in labels):
        raise ConfigError(f"base domain {settings.base_domain!r} is not a valid domain name")
    for name in (
        "idle_timeout",
        "boot_timeout",
        "build_timeout",
        "release_timeout",
        "max_build_timeout",
        "build_cpus",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name.replace('_', '-')} must be positive")
    if not 1 <= settings.router_processes <= 64:
        raise ConfigError("router processes must be between 1 and 64")
    if settings.warm_budget_mb is not None and settings.warm_budget_mb < 0:
        raise ConfigError("warm budget must be 0 (no dormant templates) or more MB")
    if settings.page_out_after < 0:
        raise ConfigError("page-out-after must be 0 (never) or more seconds")
    if settings.hot_set_mb < 0:
        raise ConfigError("hot set must be 0 (page out everything) or more MB")
    if settings.hot_set_budget_mb is not None and settings.hot_set_budget_mb < 0:
        raise ConfigError("hot set budget must be 0 (no hot set kept) or more MB")
    if settings.swap_file_mb is not None and settings.swap_file_mb < 0:
        raise ConfigError("swap file must be 0 (none) or more MB")
    if settings.build_concurrency < 1:
        raise ConfigError("build concurrency must be at least 1")
    if settings.https_port is not None:
        if not 0 < settings.https_port < 65536:
            raise ConfigError(f"https port must be between 1 and 65535, not {settings.https_port}")
        if settings.https_port == settings.port:
            raise ConfigError("the HTTPS port must differ from the plain-HTTP port")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if settings.tls_cert is not None and settings.https_port is None:
        raise ConfigError("--tls-cert needs --https-port (the listener that serves it)")
    if not settings.acme_directory.startswith(("https://", "http://")):
        raise ConfigError(f"ACME directory {settings.acme_directory!r} is not an http(s) URL")
    if settings.acme_retry_seconds <= 0:
        raise ConfigError("acme-retry-seconds must be positive")
    if settings.max_build_timeout < settings.build_timeout:
        raise ConfigError("max-build-timeout must be at least build-timeout")
    if settings.build_disk_mb < 0:
        raise ConfigError("build-disk-mb must be 0 (no quota) or more")
    if settings.keep_releases < 0:
        raise ConfigError("keep-releases must be 0 or more")
    if settings.network not in ("auto", "isolated", "host"):
        raise ConfigError(f"network must be auto, isolated or host, not {settings.network!r}")
    if settings.sandbox not in ("auto", "bwrap", "none"):
        raise ConfigError(f"sandbox must be auto, bwrap or none, not {settings.sandbox!r}")
    admin = settings.postgres_admin_url
    if admin is not None and not admin.startswith(("postgresql://", "postgres://")):
        raise ConfigError("postgres admin URL must start with postgresql://")
    if settings.redis_maxmemory_mb < 1:
        raise ConfigError("redis maxmemory must be at least 1 MB")
    _check_github_app(settings)
    return replace(settings, base_domain=base, data_dir=settings.data_dir.expanduser().absolute())


def _check_github_app(settings: Settings) -> None:
    """The platform's GitHub App: both flags or neither, a positive id, a readable RSA key."""
    from phemeral.github.app_auth import load_private_key

    if (settings.github_app_id is None) != (settings.github_app_key_file is None):
        raise ConfigError("--github-app-id and --github-app-key-file go together")
    if settings.github_app_id is None or settings.github_app_key_file is None:
        return
    if settings.github_app_id <= 0:
        raise ConfigError(f"GitHub App id must be positive, not {settings.github_app_id}")
    try:
        pem = settings.github_app_key_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"GitHub App key file {settings.github_app_key_file} cannot be read: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from exc
    try:
        load_private_key(pem)
    except InvalidInput as exc:
        raise ConfigError(f"{settings.github_app_key_file}: {exc.message}") from exc
