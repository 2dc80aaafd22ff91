"""Deployment pages: a project's deployments (filtered, paged), one deployment (settings, build
log by stage, runtime logs), promote (with its confirmation) and redeploy."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from phemeral.dashboard import present
from phemeral.dashboard.control import JSON, PlatformApi
from phemeral.dashboard.page import Pages
from phemeral.dashboard.redeploy import can_redeploy, redeploy
from phemeral.deploys import ControlPlane as ControlPlaneState
from phemeral.errors import Conflict, PhemeralError

DASHBOARD_ACTOR = "admin (dashboard)"
PAGE_SIZE = 20
RUNTIME_PAGE_SIZE = 100
BUILD_LOG_MAX_LINES = 10_000
BUILD_LOG_PAGE = 5_000  # the API's largest page: one call for most build logs


class DeploymentPages(Pages):
    async def deployments(
        self,
        request: Request,
        name: str,
        environment: str = "",
        status: str = "",
        cursor: str = "",
        trail: str = "",
        limit: int = PAGE_SIZE,
    ) -> Response:
        limit = max(1, min(limit, 100))

        async def load(api: PlatformApi) -> dict[str, Any]:
            project = await api.project(name)
            envs = await api.environments(name)
            items, next_cursor = await filtered_deployments(
                api, name, environment or None, status or None, cursor or None, want=limit
            )
            base = {"environment": environment, "status": status}
            if limit != PAGE_SIZE:
                base["limit"] = str(limit)
            newer_query, older_query = present.log_pages(base, cursor, trail, next_cursor)
            return {
                "project": project,
                "environments": envs,
                "environment": environment,
                "status": status,
                "items": items,
                "cursor": cursor,
                "limit": limit if limit != PAGE_SIZE else None,
                "first_query": urlencode({k: v for k, v in base.items() if v}),
                "newer_query": newer_query,
                "older_query": older_query,
                "crumbs": [
                    ("Projects", "/projects"),
                    (name, f"/projects/{name}"),
                    ("Deployments", None),
                ],
            }

        return await self.signed_in_page(request, "deployments.html", load)

    async def deployment(
        self,
        request: Request,
        deployment_id: str,
        stream: str = "",
        q: str = "",
        cursor: str = "",
        trail: str = "",
        limit: int = RUNTIME_PAGE_SIZE,
    ) -> Response:
        async def load(api: PlatformApi) -> dict[str, Any]:
            d = await api.deployment(deployment_id)
            # while someone pages or filters runtime logs, the build log stays out of the way
            browsing_runtime = bool(cursor or stream or q)
            lines, build_cursor, seen = (
                ([], None, 0) if browsing_runtime else await whole_build_log(api, deployment_id)
            )
            rt_lines, older = await api.runtime_log(
                deployment_id,
                cursor=cursor or None,
                limit=max(10, min(limit, 1000)),
                order="desc",
                stream=stream or None,
                text=q or None,
            )
            filters = {"stream": stream, "q": q}
            if limit != RUNTIME_PAGE_SIZE:
                filters["limit"] = str(limit)
            newer_query, older_query = present.log_pages(filters, cursor, trail, older)
            return {
                "d": d,
                "settings_rows": present.setting_rows(d.get("settings")),
                "settings_warnings": present.setting_warnings(d.get("settings")),
                "stages": present.group_stages(
                    lines, str(d.get("status")), d.get("failure_reason")
                ),
                "build_hidden": browsing_runtime,
                "build_cursor": build_cursor,
                "build_seen": seen,
                "build_truncated": len(lines) >= BUILD_LOG_MAX_LINES,
                "build_shown": len(lines),
                "can_redeploy": can_redeploy((d.get("trigger") or {}).get("kind"), d.get("status")),
                "rt": {
                    "lines": rt_lines,
                    "stream": stream,
                    "q": q,
                    "limit": filters.get("limit"),
                    "newer_query": newer_query,
                    "older_query": older_query,
                },
                "crumbs": [
                    ("Projects", "/projects"),
                    (str(d.get("project")), f"/projects/{d.get('project')}"),
                    (
                        str(d.get("environment")),
                        f"/projects/{d.get('project')}/environments/{d.get('environment')}",
                    ),
                    (deployment_id, None),
                ],
            }

        return await self.signed_in_page(request, "deployment.html", load)

    async def confirm_promote(self, request: Request, deployment_id: str) -> Response:
        async def load(api: PlatformApi) -> dict[str, Any]:
            d = await api.deployment(deployment_id)
            envs = await api.environments(str(d.get("project")))
            env = next((e for e in envs if e.get("name") == d.get("environment")), {})
            return {
                "d": d,
                "current_id": env.get("current_deployment_id"),
                "crumbs": [
                    ("Projects", "/projects"),
                    (str(d.get("project")), f"/projects/{d.get('project')}"),
                    (deployment_id, f"/deployments/{deployment_id}"),
                    ("Promote", None),
                ],
            }

        return await self.signed_in_page(request, "promote.html", load)

    async def promote(self, request: Request, deployment_id: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields

        async def promote_it(api: PlatformApi) -> JSON:
            await api.promote(deployment_id, fields.get("reason", "").strip() or None)
            return await api.deployment(deployment_id)

        d = await self.calling(request, promote_it)
        if isinstance(d, PhemeralError):
            return self.error_page(request, session, d)
        return RedirectResponse(
            f"/projects/{d.get('project')}/environments/{d.get('environment')}?notice=promoted",
            status_code=303,
        )

    async def redeploy(self, request: Request, deployment_id: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        cp = getattr(request.app.state, "cp", None)
        if not isinstance(cp, ControlPlaneState):
            return self.error_page(
                request, session, Conflict("this server cannot redeploy from the dashboard")
            )
        try:
            new_id = await asyncio.to_thread(redeploy, cp, deployment_id, DASHBOARD_ACTOR)
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        return RedirectResponse(f"/deployments/{new_id}", status_code=303)


async def filtered_deployments(
    api: PlatformApi,
    project: str,
    environment: str | None,
    status: str | None,
    cursor: str | None,
    want: int = PAGE_SIZE,
    max_pages: int = 10,
) -> tuple[list[JSON], str | None]:
    """One page of deployments; a status filter reads whole API pages until it has enough."""
    items: list[JSON] = []
    for _ in range(max_pages):
        page, cursor = await api.deployments(
            project, environment=environment, cursor=cursor, limit=want
        )
        items.extend(d for d in page if not status or d.get("status") == status)
        if len(items) >= want or not cursor:
            break
    return items, cursor


async def whole_build_log(
    api: PlatformApi, deployment_id: str
) -> tuple[list[JSON], str | None, int]:
    """Every build log line (up to a cap), plus where a live follower resumes: the last cursor
    the API gave and how many lines after it were already read."""
    lines: list[JSON] = []
    base: str | None = None
    seen = 0
    while len(lines) < BUILD_LOG_MAX_LINES:
        page, nxt = await api.build_log(deployment_id, cursor=base, limit=BUILD_LOG_PAGE)
        lines.extend(page)
        if nxt and page:
            base, seen = nxt, 0
            continue
        seen = len(page)
        break
    return lines, base, seen
