"""Projects: create (with its `production` environment and default domain), change settings,
delete, and the webhook secret."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from phemeral.build import cache
from phemeral.deploys.environments import (
    add_environment,
    require_service_confirmation,
    services_in,
)
from phemeral.deploys.plane import ControlPlane, now
from phemeral.deploys.routing import publish
from phemeral.deploys.services import Removed, delete_environment_services
from phemeral.errors import Conflict, InvalidInput
from phemeral.github.app_auth import check_id, load_private_key
from phemeral.models import DeploymentStatus
from phemeral.settings import Settings
from phemeral.store.counters import next_app_uid
from phemeral.store.names import check_branch, check_project_name
from phemeral.store.schema import Deployment, Environment, Project
from phemeral.store.views import get_project

PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
PACKAGE_MANAGERS = ("uv", "poetry", "pip")


def create_project(
    cp: ControlPlane,
    name: str,
    *,
    repo_url: str | None = None,
    root_dir: str | None = None,
    start_command: str | None = None,
    python_version: str | None = None,
    package_manager: str | None = None,
    webhook_secret: str | None = None,
    branch: str = "main",
    preview_data: str | None = None,
    workers: int | None = None,
    build_timeout: int | None = None,
) -> Project:
    """A project with its `production` environment (branch `main`) and default domain."""
    check_project_name(name)
    fields = _checked_project_fields(
        cp,
        {
            "repo_url": repo_url,
            "root_dir": root_dir,
            "start_command": start_command,
            "python_version": python_version,
            "package_manager": package_manager,
            "preview_data": preview_data,
            "workers": workers,
            "build_timeout": build_timeout,
        },
    )
    secret = webhook_secret or os.urandom(24).hex()
    for attempt in range(3):
        try:
            project = _insert_project(cp, name, secret, branch, fields)
        except IntegrityError as exc:  # a concurrent create took the name or the uid
            if attempt == 2:
                raise Conflict(f"project {name!r} could not be created: {exc.orig}") from exc
            continue
        publish(cp)
        return project
    raise AssertionError("unreachable")


def _insert_project(
    cp: ControlPlane, name: str, secret: str, branch: str, fields: dict[str, Any]
) -> Project:
    with cp.store.write() as s:
        if s.scalar(select(Project.id).where(Project.name == name)) is not None:
            raise Conflict(f"project {name!r} already exists")
        project = Project(
            name=name,
            uid=next_app_uid(s),  # never a deleted project's: its files may still be around
            webhook_secret=cp.box.encrypt(secret),
            created_at=now(),
            **fields,
        )
        s.add(project)
        s.flush()
        add_environment(s, project, "production", [check_branch(branch)], [])
    return project


def _checked_project_fields(cp: ControlPlane, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key == "workers":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64
            ):
                raise InvalidInput("workers must be a whole number from 1 to 64 (or null)")
            out[key] = value
            continue
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None:
            if key == "python_version" and not PYTHON_VERSION.match(value):
                raise InvalidInput(f"python version {value!r} is not of the form 3.X")
            if key == "package_manager" and value not in PACKAGE_MANAGERS:
                raise InvalidInput(f"package manager must be one of {', '.join(PACKAGE_MANAGERS)}")
            if key == "root_dir" and (value.startswith("/") or ".." in Path(value).parts):
                raise InvalidInput(f"root dir {value!r} must be a relative path inside the repo")
            if key == "start_command" and ("\x00" in value or "\n" in value):
                raise InvalidInput("the start command must be one line")
            if key == "repo_url":
                _check_repo_url(cp.settings, value)
            if key == "preview_data" and value not in ("empty", "copy"):
                raise InvalidInput("preview_data must be 'empty' or 'copy'")
            if key == "build_timeout":
                _check_build_timeout(cp.settings, value)
        out[key] = "empty" if key == "preview_data" and value is None else value
    return out


def _check_repo_url(settings: Settings, url: str) -> None:
    local = url.startswith(("/", "file:", ".", "~"))
    if local and not settings.allow_local_repos:
        raise InvalidInput(
            f"repository {url!r} is a local path; the server accepts those only when it runs "
            "with --allow-local-repos"
        )
    if not local and not re.match(r"^(https://|http://|ssh://|git@|git://)", url):
        raise InvalidInput(f"repository {url!r} is not an https, ssh or git URL")


def _check_build_timeout(settings: Settings, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("build_timeout must be a whole number of seconds")
    if not 30 <= value <= settings.max_build_timeout:
        raise InvalidInput(
            f"build_timeout must be between 30 and {settings.max_build_timeout:g} s "
            "(the server's --max-build-timeout)"
        )


GITHUB_APP_FIELDS = ("github_app_id", "github_app_key", "github_installation_id")


def update_project(cp: ControlPlane, name: str, changes: Mapping[str, Any]) -> Project:
    """Change settings; a new start command (or clearing it) applies to new deployments only."""
    secrets_given = {k: changes[k] for k in ("webhook_secret", "repo_token") if k in changes}
    app_given = {k: changes[k] for k in GITHUB_APP_FIELDS if k in changes}
    plain = {k: v for k, v in changes.items() if k not in secrets_given and k not in app_given}
    unknown = set(plain) - {
        "repo_url",
        "root_dir",
        "start_command",
        "python_version",
        "package_manager",
        "preview_data",
        "workers",
        "build_timeout",
    }
    if unknown:
        raise InvalidInput(f"unknown project setting(s): {', '.join(sorted(unknown))}")
    fields = _checked_project_fields(cp, plain)
    app_fields = _checked_github_app(app_given)
    with cp.store.write() as s:
        project = get_project(s, name, lock=True)
        for key, value in fields.items():
            setattr(project, key, value)
        for key, value in secrets_given.items():
            setattr(project, key, cp.box.encrypt(value) if value else None)
        if app_fields:
            for key, value in app_fields.items():
                setattr(project, key, value)
            if "github_app_key" in app_fields and app_fields["github_app_key"] is not None:
                project.github_app_key = cp.box.encrypt(app_fields["github_app_key"])
            _check_github_app_complete(cp.settings, project)
    return project


def _checked_github_app(given: Mapping[str, Any]) -> dict[str, Any]:
    """Ids as positive integers, the key as a readable RSA PEM (`InvalidInput` otherwise)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, str) and not value.strip():
            value = None
        if value is None:
            out[key] = None
        elif key == "github_app_key":
            if not isinstance(value, str):
                raise InvalidInput("github_app_key must be the text of the App's .pem file")
            load_private_key(value)
            out[key] = value.strip() + "\n"
        else:
            label = "GitHub App id" if key == "github_app_id" else "GitHub installation id"
            out[key] = check_id(value, label)
    return out


def _check_github_app_complete(settings: Settings, project: Project) -> None:
    if (project.github_app_id is None) != (project.github_app_key is None):
        raise InvalidInput(
            "a project's own GitHub App needs both its id and its private key "
            "(--github-app-id with --github-app-key-file); clear both with --clear-github-app"
        )
    if (
        project.github_installation_id is not None
        and project.github_app_id is None
        and settings.github_app_id is None
    ):
        raise InvalidInput(
            "an installation id needs a GitHub App: the project's own (--github-app-id and "
            "--github-app-key-file) or the server's (phemeral serve --github-app-id)"
        )


def delete_project(
    cp: ControlPlane, name: str, *, delete_services: bool = False
) -> tuple[list[str], list[Removed]]:
    """Remove a project and everything in it; refused while one of its builds runs, and, while
    it has backing services, until deleting them is confirmed (each keeps a final backup)."""
    require_service_confirmation(services_in(cp, name, None), f"project {name}", delete_services)
    with cp.store.read() as s:
        project = get_project(s, name)
        building = s.scalar(
            select(Deployment.id).where(
                Deployment.project_id == project.id,
                Deployment.status == DeploymentStatus.BUILDING,
            )
        )
        if building:
            raise Conflict(f"deployment {building} of {name} is building; delete it afterwards")
        env_ids = list(
            s.scalars(select(Environment.id).where(Environment.project_id == project.id))
        )
    removed = delete_environment_services(cp, env_ids)
    with cp.store.write() as s:
        project = get_project(s, name, lock=True)
        ids = list(s.scalars(select(Deployment.id).where(Deployment.project_id == project.id)))
        building = s.scalar(
            select(Deployment.id).where(
                Deployment.project_id == project.id,
                Deployment.status == DeploymentStatus.BUILDING,
            )
        )
        if building:
            raise Conflict(f"deployment {building} of {name} is building; delete it afterwards")
        uid = project.uid
        s.execute(delete(Project).where(Project.id == project.id))
    publish(cp)
    shutil.rmtree(cp.settings.data_dir / "apps" / name, ignore_errors=True)
    cache.remove_project(cp.settings.data_dir, uid)
    return ids, removed


def webhook_secret(cp: ControlPlane, name: str) -> str:
    with cp.store.read() as s:
        project = get_project(s, name)
        return cp.box.decrypt(project.webhook_secret) if project.webhook_secret else ""
