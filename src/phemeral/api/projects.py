"""Projects, environments, variables, promotions audit and the webhook secret."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from phemeral import deploys
from phemeral.api.deps import CP, Actor
from phemeral.deploys.services import copy_services, variable_listing
from phemeral.store.views import (
    MASK,
    environment_view,
    get_environment,
    get_project,
    project_page,
    project_view,
    promotions_view,
)

router = APIRouter(tags=["projects"])
Json = dict[str, Any]


class Strict(BaseModel):
    """Unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class ProjectSettings(Strict):
    """The settings a project is created with and may change later."""

    repo_url: str | None = None
    root_dir: str | None = None
    start_command: str | None = None
    python_version: str | None = None
    package_manager: str | None = None
    webhook_secret: str | None = None
    workers: StrictInt | None = Field(
        default=None,
        description="Server processes per instance (WEB_CONCURRENCY for new deployments, "
        "unless an environment sets that variable; a command's own --workers wins).",
    )
    preview_data: Literal["empty", "copy"] | None = Field(
        default=None,
        description="What a pull-request preview gets of production's services: empty ones "
        "(default) or a copy of the data (pg_dump | pg_restore, Redis RDB).",
    )
    build_timeout: int | None = None  # seconds; null: the server's default


class ProjectCreate(ProjectSettings):
    name: str
    branch: str = "main"


class ProjectPatch(ProjectSettings):
    """Only the fields sent change; ``start_command: null`` clears the custom command."""

    repo_token: str | None = None
    github_app_id: int | str | None = Field(
        default=None,
        description="The project's own GitHub App (with github_app_key); null clears it. "
        "Without one, the server's App (serve --github-app-id) is used when it has one.",
    )
    github_app_key: str | None = Field(
        default=None,
        description="The App's private key (the PEM text GitHub generated); stored encrypted, "
        "never returned.",
    )
    github_installation_id: int | str | None = Field(
        default=None,
        description="The App's installation on the repository; asked of GitHub when unset.",
    )


class EnvironmentCreate(Strict):
    name: str
    branches: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    copy_services_from: str | None = Field(
        default=None,
        description="Give the new environment a service of each kind this environment "
        "(e.g. production) has.",
    )
    copy_data: bool = Field(
        default=False,
        description="With copy_services_from: copy schema and data (pg_dump | pg_restore, "
        "Redis RDB); otherwise the new services start empty.",
    )


class EnvironmentPatch(Strict):
    """Replaces what is sent: the mapped branches, the custom domains (the default stays)."""

    branches: list[str] | None = None
    domains: list[str] | None = None
    https_redirect: bool | None = None  # 308 to HTTPS once a host has a valid certificate
    hsts_max_age: int | None = None  # seconds; 0 turns HSTS off


class VariablesSet(Strict):
    values: dict[str, str]
    secret: bool = False


class VariablesUnset(Strict):
    keys: list[str]


@router.post("/projects", status_code=201)
def create_project(body: ProjectCreate, cp: CP, actor: Actor) -> Json:
    """Create a project with its `production` environment; the webhook secret is shown once."""
    project = deploys.create_project(cp, **body.model_dump())
    with cp.store.read() as s:
        view = project_view(s, get_project(s, project.name), cp.settings)
    view["webhook_secret"] = deploys.webhook_secret(cp, project.name)
    return view


@router.get("/projects")
def list_projects(
    cp: CP, actor: Actor, cursor: str | None = None, limit: int | None = None
) -> Json:
    """By name, a page at a time (50 by default, at most 500); pass ``next_cursor`` back as
    ``cursor`` for the next page (None on the last one)."""
    with cp.store.read() as s:
        return project_page(s, cp.settings, cursor=cursor, limit=limit)


@router.get("/projects/{name}")
def show_project(name: str, cp: CP, actor: Actor) -> Json:
    with cp.store.read() as s:
        return project_view(s, get_project(s, name), cp.settings)


@router.patch("/projects/{name}")
def patch_project(name: str, body: ProjectPatch, cp: CP, actor: Actor) -> Json:
    deploys.update_project(cp, name, body.model_dump(exclude_unset=True))
    return show_project(name, cp, actor)


@router.delete("/projects/{name}")
async def delete_project(name: str, cp: CP, actor: Actor, delete_services: bool = False) -> Json:
    """Delete a project. With backing services, refused (409) unless ``delete_services=true``;
    each service leaves a final backup in the data dir (paths in the answer)."""
    ids, removed = await asyncio.to_thread(
        deploys.delete_project, cp, name, delete_services=delete_services
    )
    if cp.runtime is not None:
        for deployment_id in ids:
            await cp.runtime.retire(deployment_id)
    return {
        "deleted": name,
        "services": [{"name": r.name, "final_backup": r.backup} for r in removed],
    }


@router.get("/projects/{name}/webhook")
def show_webhook(name: str, cp: CP, actor: Actor) -> Json:
    """The URL to paste into GitHub and the secret that signs deliveries."""
    return {
        "url": _base_url(cp) + "/api/webhooks/github",
        "secret": deploys.webhook_secret(cp, name),
    }


def _base_url(cp: deploys.ControlPlane) -> str:
    return cp.settings.base_url


@router.post("/projects/{name}/environments", status_code=201)
def create_environment(name: str, body: EnvironmentCreate, cp: CP, actor: Actor) -> Json:
    """Create an environment; optionally with copies of another environment's services
    (``copied_services`` says, per service, whether it holds "schema and data" or is "empty")."""
    if body.copy_services_from is not None:
        with cp.store.read() as s:  # the source must exist before anything is created
            get_environment(s, get_project(s, name), body.copy_services_from)
    deploys.create_environment(cp, name, body.name, body.branches, body.domains)
    copied: list[Json] = []
    if body.copy_services_from is not None:
        copied = copy_services(
            cp, name, body.copy_services_from, body.name, with_data=body.copy_data
        )
    with cp.store.read() as s:
        project = get_project(s, name)
        view = environment_view(s, get_environment(s, project, body.name), project, cp.settings)
    if body.copy_services_from is not None:
        view["copied_services"] = copied
    return view


@router.delete("/projects/{name}/environments/{env}")
async def delete_environment(
    name: str, env: str, cp: CP, actor: Actor, delete_services: bool = False
) -> Json:
    """Delete an environment (not `production`) and its deployments. With backing services,
    refused (409) unless ``delete_services=true``; each leaves a final backup in the data dir."""
    ids, removed = await asyncio.to_thread(
        deploys.delete_environment, cp, name, env, delete_services=delete_services
    )
    if cp.runtime is not None:
        for deployment_id in ids:
            await cp.runtime.retire(deployment_id)
    for deployment_id in ids:
        shutil.rmtree(cp.release_dir(name, deployment_id), ignore_errors=True)
    return {
        "deleted": f"{name}/{env}",
        "services": [{"name": r.name, "final_backup": r.backup} for r in removed],
    }


@router.get("/projects/{name}/environments")
def list_environments(name: str, cp: CP, actor: Actor) -> Json:
    with cp.store.read() as s:
        return {"items": project_view(s, get_project(s, name), cp.settings)["environments"]}


@router.patch("/projects/{name}/environments/{env}")
def patch_environment(name: str, env: str, body: EnvironmentPatch, cp: CP, actor: Actor) -> Json:
    if body.branches is not None or body.domains is not None:
        deploys.update_environment(cp, name, env, branches=body.branches, domains=body.domains)
    if body.https_redirect is not None or body.hsts_max_age is not None:
        deploys.set_https(
            cp, name, env, https_redirect=body.https_redirect, hsts_max_age=body.hsts_max_age
        )
    with cp.store.read() as s:
        project = get_project(s, name)
        return environment_view(s, get_environment(s, project, env), project, cp.settings)


@router.get("/projects/{name}/environments/{env}/promotions")
def list_promotions(name: str, env: str, cp: CP, actor: Actor) -> Json:
    """Every move of the environment's current pointer, newest first."""
    with cp.store.read() as s:
        return {"items": promotions_view(s, get_environment(s, get_project(s, name), env))}


@router.get("/projects/{name}/environments/{env}/variables")
def list_variables(name: str, env: str, cp: CP, actor: Actor) -> Json:
    with cp.store.read() as s:
        environment = get_environment(s, get_project(s, name), env)
        return {"items": variable_listing(cp, s, environment, MASK)}


@router.post("/projects/{name}/environments/{env}/variables")
def set_variables(name: str, env: str, body: VariablesSet, cp: CP, actor: Actor) -> Json:
    keys = deploys.set_variables(cp, name, env, body.values, secret=body.secret)
    return {"set": keys, "note": "applies to deployments created from now on"}


@router.post("/projects/{name}/environments/{env}/variables/unset")
def unset_variables(name: str, env: str, body: VariablesUnset, cp: CP, actor: Actor) -> Json:
    keys = deploys.unset_variables(cp, name, env, body.keys)
    return {"unset": keys, "note": "applies to deployments created from now on"}
