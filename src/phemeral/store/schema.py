"""The tables of the control plane (SQLAlchemy 2 declarative models).

Changing a column means adding an Alembic migration in ``store/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
LogId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    uid: Mapped[int] = mapped_column(Integer, unique=True)  # per-app OS user, never reused
    repo_url: Mapped[str | None] = mapped_column(Text)
    root_dir: Mapped[str | None] = mapped_column(Text)
    start_command: Mapped[str | None] = mapped_column(Text)  # the saved custom start command
    python_version: Mapped[str | None] = mapped_column(String(16))
    package_manager: Mapped[str | None] = mapped_column(String(16))
    webhook_secret: Mapped[str | None] = mapped_column(Text)  # encrypted
    repo_token: Mapped[str | None] = mapped_column(Text)  # encrypted
    # A GitHub App of the project's own (id + encrypted PEM key); without one, the platform's
    # App (serve --github-app-id). The installation id is asked of GitHub when not set.
    github_app_id: Mapped[int | None] = mapped_column(BigInteger)
    github_app_key: Mapped[str | None] = mapped_column(Text)  # encrypted
    github_installation_id: Mapped[int | None] = mapped_column(BigInteger)
    # What a pull-request preview gets of production's services: "empty" ones or a "copy".
    preview_data: Mapped[str] = mapped_column(String(8), default="empty", server_default="empty")
    # Server processes per instance: WEB_CONCURRENCY for its deployments unless an environment
    # sets that variable itself (None: the server's own default, or the command's --workers).
    workers: Mapped[int | None] = mapped_column(Integer)
    build_timeout: Mapped[int | None] = mapped_column(Integer)  # seconds; None: the server's
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Counter(Base):
    """Monotonic counters that must never go back (e.g. ``app_uid``: a deleted project's uid is
    never handed out again, whatever rows are left)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(20))
    branches: Mapped[list[str]] = mapped_column(JSON, default=list)
    current_deployment_id: Mapped[str | None] = mapped_column(String(12))  # no FK: a cycle
    last_push_seq: Mapped[int] = mapped_column(Integer, default=0)  # counter of pushes received
    promoted_push_seq: Mapped[int] = mapped_column(Integer, default=0)  # newest push made current
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    https_redirect: Mapped[bool] = mapped_column(Boolean, default=True)  # 308 once certified
    hsts_max_age: Mapped[int] = mapped_column(Integer, default=0)  # 0: no HSTS header


class Domain(Base):
    """An environment domain label; unique across the whole platform."""

    __tablename__ = "domains"

    label: Mapped[str] = mapped_column(String(63), primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class CustomDomain(Base):
    """A full host name attached to one environment, with its certificate (ACME HTTP-01).

    The certificate columns stay empty until one is issued; a failed renewal keeps the old one
    (it is served until ``cert_not_after``).
    """

    __tablename__ = "custom_domains"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cert_chain: Mapped[str | None] = mapped_column(Text)  # PEM, leaf first
    cert_key: Mapped[str | None] = mapped_column(Text)  # encrypted PEM
    cert_not_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cert_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cert_failures: Mapped[int] = mapped_column(Integer, default=0)  # since the last success
    cert_last_error: Mapped[str | None] = mapped_column(Text)
    cert_next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: when due
    cert_renew_now: Mapped[bool] = mapped_column(Boolean, default=False)  # asked by hand


class AcmeAccount(Base):
    """The platform's account at one ACME directory (one per directory URL)."""

    __tablename__ = "acme_accounts"

    directory: Mapped[str] = mapped_column(String(500), primary_key=True)
    key: Mapped[str] = mapped_column(Text)  # encrypted PEM
    email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_project_created", "project_id", "created_at", "id"),
        Index("ix_deployments_environment_created", "environment_id", "created_at", "id"),
        Index("ix_deployments_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(16))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(Text)
    pusher: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    github_repo: Mapped[str | None] = mapped_column(Text)  # owner/name its statuses go to
    push_seq: Mapped[int | None] = mapped_column(Integer)
    promote_on_success: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(Text)
    custom_start_command: Mapped[str | None] = mapped_column(Text)  # snapshot at creation
    start_command: Mapped[str | None] = mapped_column(Text)
    start_command_source: Mapped[str | None] = mapped_column(String(16))
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # detection snapshot
    env_snapshot: Mapped[str] = mapped_column(Text)  # encrypted JSON object
    release: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the Release, for restarts
    # Variables of the snapshot that came from backing services: {key: service name}.
    env_sources: Mapped[dict[str, str] | None] = mapped_column(JSON)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # kept by release retention
    collected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # release files removed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Promotion(Base):
    """One move of an environment's current pointer: who, when, from, to, why."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(LogId, primary_key=True, autoincrement=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    from_deployment_id: Mapped[str | None] = mapped_column(String(12))
    to_deployment_id: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EnvVar(Base):
    __tablename__ = "env_vars"
    __table_args__ = (UniqueConstraint("environment_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)  # encrypted, secret or not
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Service(Base):
    """A backing service (PostgreSQL database or Redis server) of one environment."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)  # platform-wide
    kind: Mapped[str] = mapped_column(String(16))  # postgres | redis
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    location: Mapped[str] = mapped_column(String(16))  # embedded | external
    resource: Mapped[str] = mapped_column(String(63), unique=True)  # database+role / directory
    port: Mapped[int] = mapped_column(Integer)
    credentials: Mapped[str] = mapped_column(Text)  # encrypted JSON
    connection_limit: Mapped[int | None] = mapped_column(Integer)
    maxmemory_mb: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BuildLogRow(Base):
    __tablename__ = "build_log_lines"
    __table_args__ = (Index("ix_build_log_deployment", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(LogId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)


class RuntimeLogRow(Base):
    __tablename__ = "runtime_log_lines"
    __table_args__ = (Index("ix_runtime_log_deployment", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(LogId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    instance: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(16))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Preview(Base):
    """A pull request's preview: the environment ``pr-{number}`` and what GitHub needs back."""

    __tablename__ = "previews"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # open | suspended | closed
    head_repo: Mapped[str | None] = mapped_column(Text)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    fork: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_by: Mapped[str | None] = mapped_column(Text)  # who let a fork's build have secrets
    comment_id: Mapped[int | None] = mapped_column(Integer)  # the PR comment edited in place
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    active_at: Mapped[datetime] = mapped_column(UTCDateTime)  # last deploy or resume
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PreviewVar(Base):
    """The project-level variable set every preview environment takes."""

    __tablename__ = "preview_vars"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)  # encrypted
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
