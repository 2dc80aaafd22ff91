"""Project pages: the list, a project (settings form, webhook, environments, recent
deployments) and an environment (its current deployment, pointer history, rollback targets)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from phemeral.dashboard import present
from phemeral.dashboard.control import JSON, PlatformApi
from phemeral.dashboard.deployments import filtered_deployments
from phemeral.dashboard.page import Pages
from phemeral.dashboard.session import Session
from phemeral.errors import NotFound, PhemeralError

PROJECTS_PAGE = 50
RECENT_DEPLOYMENTS = 10
ROLLBACK_CANDIDATES = 20


class ProjectPages(Pages):
    async def projects(self, request: Request, cursor: str = "", trail: str = "") -> Response:
        """A page of projects by name (the API's order), with links to the next and previous."""

        async def load(api: PlatformApi) -> dict[str, Any]:
            items, next_cursor = await api.projects(cursor=cursor or None, limit=PROJECTS_PAGE)
            previous_query, next_query = present.log_pages({}, cursor, trail, next_cursor)
            return {
                "projects": items,
                "cursor": cursor,
                "previous_query": previous_query,
                "next_query": next_query,
            }

        return await self.signed_in_page(request, "projects.html", load)

    def with_urls(self, envs: list[JSON]) -> list[JSON]:
        return [
            {**e, "urls": present.environment_urls(e, self.settings.url_for_label)} for e in envs
        ]

    def webhook_url(self) -> str:
        return f"{self.settings.base_url}/api/webhooks/github"

    async def project(self, request: Request, name: str) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        return await self.project_page(request, session, name)

    async def project_page(
        self,
        request: Request,
        session: Session | None,
        name: str,
        *,
        webhook_secret: str | None = None,
        problem: str | None = None,
        status_code: int = 200,
    ) -> Response:
        async def load(api: PlatformApi) -> dict[str, Any]:
            project = await api.project(name)
            envs = await api.environments(name)
            recent, _ = await api.deployments(name, limit=RECENT_DEPLOYMENTS)
            return {
                "status_code": status_code,
                "project": project,
                "environments": self.with_urls(envs),
                "recent": recent,
                "webhook_url": self.webhook_url(),
                "webhook_secret": webhook_secret,
                "problem": problem,
                "crumbs": [("Projects", "/projects"), (name, None)],
            }

        return await self.from_api(request, session, "project.html", load)

    async def save_settings(self, request: Request, name: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        changes = {
            key: fields.get(key, "").strip() or None
            for key in ("repo_url", "root_dir", "start_command")
        }
        refused = await self.calling(request, lambda api: api.update_project(name, changes))
        if isinstance(refused, NotFound):
            return self.error_page(request, session, refused)
        if isinstance(refused, PhemeralError):  # a value was refused: say why, on the same form
            return await self.project_page(
                request, session, name, problem=refused.message, status_code=refused.http_status
            )
        return RedirectResponse(f"/projects/{name}?notice=saved", status_code=303)

    async def reveal_secret(self, request: Request, name: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        secret = await self.calling(request, lambda api: api.webhook_secret(name))
        if isinstance(secret, PhemeralError):
            return self.error_page(request, session, secret)
        return await self.project_page(
            request, session, name, webhook_secret=secret or "(none set)"
        )

    async def environment(self, request: Request, name: str, env: str) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        return await self.environment_page(request, session, name, env)

    async def environment_page(
        self,
        request: Request,
        session: Session | None,
        name: str,
        env: str,
        *,
        notice: str | None = None,
        problem: str | None = None,
        status_code: int = 200,
    ) -> Response:
        async def load(api: PlatformApi) -> dict[str, Any]:
            project = await api.project(name)
            envs = self.with_urls(await api.environments(name))
            found = next((e for e in envs if e.get("name") == env), None)
            if found is None:
                raise NotFound(f"project {name!r} has no environment {env!r}")
            current_id = found.get("current_deployment_id")
            current = await api.deployment(str(current_id)) if current_id else None
            history, history_note = await self.history(api, name, env)
            candidates, more = await filtered_deployments(
                api, name, env, "successful", None, want=ROLLBACK_CANDIDATES
            )
            extra = {"notice": notice} if notice else {}
            return {
                **extra,
                "status_code": status_code,
                "problem": problem,
                "services": await api.services(name, env),
                "custom_domains": await api.custom_domains(name, env),
                "project": project,
                "env": found,
                "current": current,
                "history": history,
                "history_note": history_note,
                "candidates": candidates,
                "candidates_more": bool(more),
                "crumbs": [("Projects", "/projects"), (name, f"/projects/{name}"), (env, None)],
            }

        return await self.from_api(request, session, "environment.html", load)

    @staticmethod
    async def history(api: PlatformApi, project: str, env: str) -> tuple[list[JSON], str | None]:
        try:
            return await api.promotions(project, env), None
        except NotFound:
            return [], "The history of pointer moves is not available from this server."
