"""What every use-case shares: the `ControlPlane` state, the plugged-in parts' protocols, the clock
and the lookups by name that raise `NotFound`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

from phemeral.github.app_auth import AppCredentials, InstallationTokens
from phemeral.models import (
    BuildJob,
    BuildLog,
    BuildResult,
    DeploymentStatus,
    InstanceState,
    Release,
    RoutingSnapshot,
    TlsCertificate,
)
from phemeral.secrets import SecretBox
from phemeral.services.manager import ServiceManager
from phemeral.settings import Settings
from phemeral.store.db import Store
from phemeral.store.logs import LogWriter
from phemeral.store.schema import Environment
from phemeral.store.views import get_environment, get_project

if TYPE_CHECKING:
    from phemeral.deploys.processes import ProcessSync
    from phemeral.deploys.queue import BuildQueue
    from phemeral.deploys.reporting import GitHubReporting
    from phemeral.deploys.routing import Publisher


class Builder(Protocol):
    """`phemeral.build.pipeline.build`: turns a job into a release; never touches the DB."""

    def __call__(
        self, job: BuildJob, log: BuildLog, settings: Settings
    ) -> Awaitable[BuildResult]: ...


class RuntimeControl(Protocol):
    """What the control plane needs of `phemeral.runtime.supervisor.Runtime`."""

    def register(self, release: Release) -> None: ...

    async def boot_check(self, release: Release, log: BuildLog) -> None: ...

    async def run_release(self, release: Release, log: BuildLog) -> None: ...

    async def run_processes(self, current: list[Release]) -> None: ...

    def instances(self, deployment_id: str) -> InstanceState: ...

    async def retire(self, deployment_id: str) -> None: ...


SnapshotListener = Callable[[RoutingSnapshot], None]
# Called on the event loop once a deployment's final status is stored: (id, status, reason).
FinishListener = Callable[[str, DeploymentStatus, str | None], None]


class TlsListener(Protocol):
    """What receives certificates and ACME HTTP-01 answers (the router's `RouterServer`)."""

    def set_certificates(self, certificates: Iterable[TlsCertificate]) -> None: ...

    def set_challenge(self, host: str, token: str, key_authorization: str | None) -> None: ...


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ControlPlane:
    """The state the use-cases share: settings, the store, secrets, and the plugged-in parts."""

    settings: Settings
    store: Store
    box: SecretBox
    logs: LogWriter
    builder: Builder | None = None
    runtime: RuntimeControl | None = None
    listeners: list[SnapshotListener] = field(default_factory=list)
    finish_listeners: list[FinishListener] = field(default_factory=list)
    snapshot: RoutingSnapshot | None = None
    publish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    publisher: Publisher | None = None  # publishes requested off the request path (routing)
    queue: BuildQueue | None = None
    # one lock per (project, environment): release commands of one environment never overlap
    release_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    process_sync: ProcessSync | None = None  # extra processes follow the current pointers
    _services: ServiceManager | None = field(default=None, repr=False)
    tls_listeners: list[TlsListener] = field(default_factory=list)
    wildcard: TlsCertificate | None = None  # the operator's --tls-cert, when given
    certificates_changed: Callable[[], None] | None = None  # wakes the certificate manager
    _github_tokens: InstallationTokens | None = field(default=None, repr=False)
    _github_app: AppCredentials | None = field(default=None, repr=False)
    github_reporting: GitHubReporting | None = field(default=None, repr=False)  # reporting_for
    interrupted: list[str] = field(default_factory=list)  # builds the last run left unfinished

    @property
    def github_tokens(self) -> InstallationTokens:
        """GitHub App installation tokens, in memory, renewed before they expire."""
        if self._github_tokens is None:
            self._github_tokens = InstallationTokens(self.settings.github_api_url)
        return self._github_tokens

    @property
    def github_app(self) -> AppCredentials | None:
        """The server's GitHub App (``--github-app-id``/``--github-app-key-file``), if any; the
        key file is read once (it was checked at start)."""
        s = self.settings
        if self._github_app is None and s.github_app_id and s.github_app_key_file:
            self._github_app = AppCredentials(s.github_app_id, s.github_app_key_file.read_text())
        return self._github_app

    @property
    def services(self) -> ServiceManager:
        """The backing services' servers (nothing starts until a service needs it)."""
        if self._services is None:
            self._services = ServiceManager(self.settings)
        return self._services

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    def release_dir(self, project: str, deployment_id: str) -> Path:
        return self.settings.data_dir / "apps" / project / "releases" / deployment_id

    def upload_path(self, deployment_id: str) -> Path:
        return self.uploads_dir / f"{deployment_id}.tar.gz"


def find_environment(s: Session, project: str, name: str, *, lock: bool = False) -> Environment:
    """The environment `name` of the project named `project` (locked for update if asked)."""
    return get_environment(s, get_project(s, project), name, lock=lock)
