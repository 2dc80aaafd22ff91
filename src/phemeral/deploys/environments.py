"""Environments (mapped branches, domains) and their variables, and what those variables become
in a deployment's runtime environment."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from phemeral.deploys.plane import ControlPlane, find_environment, now
from phemeral.deploys.routing import publish
from phemeral.deploys.services import Removed, delete_environment_services, environment_services
from phemeral.errors import Conflict, InvalidInput, NotFound
from phemeral.models import DeploymentStatus
from phemeral.store.names import (
    check_branch,
    check_domain_label,
    check_environment_name,
    default_domain,
)
from phemeral.store.schema import Deployment, Domain, Environment, EnvVar, Project
from phemeral.store.variables import check_variable, runtime_env
from phemeral.store.views import get_project


def create_environment(
    cp: ControlPlane, project: str, name: str, branches: list[str], domains: list[str]
) -> Environment:
    check_environment_name(name)
    branches = [check_branch(b) for b in branches]
    domains = [check_domain_label(d) for d in domains]
    with cp.store.write() as s:
        proj = get_project(s, project, lock=True)
        same_name = Environment.project_id == proj.id, Environment.name == name
        if s.scalar(select(Environment).where(*same_name)) is not None:
            raise Conflict(f"environment {name!r} already exists in {project}")
        env = add_environment(s, proj, name, branches, domains)
    publish(cp)
    return env


def update_environment(
    cp: ControlPlane,
    project: str,
    name: str,
    *,
    branches: list[str] | None = None,
    domains: list[str] | None = None,
) -> Environment:
    """Replace the mapped branches and/or the custom domains (the default domain stays)."""
    branches = None if branches is None else [check_branch(b) for b in branches]
    domains = None if domains is None else [check_domain_label(d) for d in domains]
    with cp.store.write() as s:
        proj = get_project(s, project, lock=True)
        env = find_environment(s, project, name, lock=True)
        if branches is not None:
            others = [
                e
                for e in s.scalars(select(Environment).where(Environment.project_id == proj.id))
                if e.id != env.id
            ]
            for other in others:
                for branch in branches:
                    if branch in other.branches:
                        raise Conflict(
                            f"branch {branch!r} is already mapped to environment {other.name!r}"
                        )
            env.branches = branches
        if domains is not None:
            s.execute(delete(Domain).where(Domain.environment_id == env.id, ~Domain.is_default))
            s.flush()
            for label in domains:
                _claim_domain(s, env, label, False)
    publish(cp)
    return env


def add_environment(
    s: Session, project: Project, name: str, branches: list[str], domains: list[str]
) -> Environment:
    taken = _branch_owner(s, project, branches)
    if taken:
        raise Conflict(f"branch {taken[0]!r} is already mapped to environment {taken[1]!r}")
    env = Environment(project_id=project.id, name=name, branches=branches, created_at=now())
    s.add(env)
    s.flush()
    labels = [(default_domain(project.name, name), True)] + [(d, False) for d in domains]
    for label, is_default in labels:
        _claim_domain(s, env, label, is_default)
    return env


def _branch_owner(s: Session, project: Project, branches: list[str]) -> tuple[str, str] | None:
    for env in s.scalars(select(Environment).where(Environment.project_id == project.id)):
        for branch in branches:
            if branch in env.branches:
                return branch, env.name
    return None


def _claim_domain(s: Session, env: Environment, label: str, is_default: bool) -> None:
    if s.get(Domain, label) is not None:
        raise Conflict(f"domain {label!r} is already in use")
    if s.get(Deployment, label) is not None:
        raise Conflict(f"domain {label!r} is the id of a deployment")
    s.add(Domain(label=label, environment_id=env.id, is_default=is_default))


def set_variables(
    cp: ControlPlane, project: str, environment: str, values: Mapping[str, str], *, secret: bool
) -> list[str]:
    """Add or replace variables; they reach deployments created from now on."""
    for key, value in values.items():
        check_variable(key, value)
    with cp.store.write() as s:
        env = find_environment(s, project, environment)
        existing = {
            v.key: v for v in s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id))
        }
        for key, value in values.items():
            row = existing.get(key) or EnvVar(environment_id=env.id, key=key)
            row.value = cp.box.encrypt(value)
            row.secret = secret
            row.updated_at = now()
            s.add(row)
    return sorted(values)


def unset_variables(cp: ControlPlane, project: str, environment: str, keys: list[str]) -> list[str]:
    with cp.store.write() as s:
        env = find_environment(s, project, environment)
        rows = list(
            s.scalars(select(EnvVar).where(EnvVar.environment_id == env.id, EnvVar.key.in_(keys)))
        )
        missing = set(keys) - {r.key for r in rows}
        if missing:
            raise NotFound(f"no variable {', '.join(sorted(missing))} in {project}/{environment}")
        for row in rows:
            s.delete(row)
    return sorted(keys)


def services_in(cp: ControlPlane, project: str, environment: str | None) -> list[str]:
    """Names of the services of one environment, or of every environment of the project."""
    with cp.store.read() as s:
        proj = get_project(s, project)
        envs = s.scalars(select(Environment).where(Environment.project_id == proj.id))
        return [
            r.name
            for e in envs
            if environment is None or e.name == environment
            for r in environment_services(s, e.id)
        ]


def require_service_confirmation(names: list[str], what: str, confirmed: bool) -> None:
    if names and not confirmed:
        raise Conflict(
            f"{what} has services ({', '.join(names)}): deleting it deletes them too (each "
            "keeps a final backup in the data dir); confirm with delete_services=true"
        )


def delete_environment(
    cp: ControlPlane, project: str, name: str, *, delete_services: bool = False
) -> tuple[list[str], list[Removed]]:
    """Remove an environment (never `production`), its deployments and, once confirmed, its
    services (a final backup of each). Returns the deployment ids to retire and the services."""
    if name == "production":
        raise InvalidInput("the production environment cannot be deleted; delete the project")
    names = services_in(cp, project, name)
    require_service_confirmation(names, f"environment {project}/{name}", delete_services)
    with cp.store.read() as s:
        env = find_environment(s, project, name)
        building = s.scalar(
            select(Deployment.id).where(
                Deployment.environment_id == env.id, Deployment.status == DeploymentStatus.BUILDING
            )
        )
        if building:
            raise Conflict(f"deployment {building} of {project}/{name} is building; wait for it")
        env_id = env.id
    removed = delete_environment_services(cp, [env_id])
    with cp.store.write() as s:
        ids = list(s.scalars(select(Deployment.id).where(Deployment.environment_id == env_id)))
        s.execute(delete(Environment).where(Environment.id == env_id))
    publish(cp)
    return ids, removed


def deployment_runtime_env(
    cp: ControlPlane, s: Session, d: Deployment, env: Environment
) -> dict[str, str]:
    snapshot: dict[str, str] = json.loads(cp.box.decrypt(d.env_snapshot))
    domains = s.scalars(select(Domain.label).where(Domain.environment_id == env.id))
    return runtime_env(
        snapshot,
        deployment_id=d.id,
        environment=env.name,
        deployment_url=cp.settings.url_for_label(d.id),
        environment_urls=[cp.settings.url_for_label(label) for label in domains],
    )
