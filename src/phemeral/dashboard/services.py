"""An environment's backing services on its page: create, back up, rotate credentials, delete
(after a confirmation page). Every action goes through the documented API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from phemeral.dashboard.control import JSON, PlatformApi
from phemeral.dashboard.projects import ProjectPages
from phemeral.dashboard.session import Session
from phemeral.errors import NotFound, PhemeralError


class ServicePages(ProjectPages):
    async def create_service(self, request: Request, name: str, env: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        body: dict[str, object] = {
            "kind": fields.get("kind", ""),
            "project": name,
            "environment": env,
        }
        if fields.get("name", "").strip():
            body["name"] = fields["name"].strip()
        done = await self.calling(request, lambda api: api.create_service(body))
        return await self._after(
            request,
            session,
            name,
            env,
            done,
            lambda d: (
                f"Created {d['kind']} service "
                f"{d['name']}: deployments created from now on receive {', '.join(d['variables'])}."
            ),
        )

    async def service_action(self, request: Request, service: str, action: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        found = await self.calling(request, lambda api: api.service(service))
        if isinstance(found, PhemeralError):
            return self.error_page(request, session, found)
        project, env = str(found["project"]), str(found["environment"])
        if action == "backup":
            done = await self.calling(request, lambda api: api.backup_service(service))
            return await self._after(
                request, session, project, env, done, lambda d: f"Backed up {service}: {d['path']}"
            )
        if action == "rotate":
            done = await self.calling(request, lambda api: api.rotate_service(service))
            return await self._after(
                request,
                session,
                project,
                env,
                done,
                lambda d: (
                    f"New credentials for {service}: deployments created from now on "
                    "receive them; redeploy to use them."
                ),
            )
        if action == "delete":
            done = await self.calling(request, lambda api: api.delete_service(service))
            return await self._after(
                request,
                session,
                project,
                env,
                done,
                lambda d: f"Deleted {service}; its final backup is {d['final_backup']}.",
            )
        return self.error_page(request, session, NotFound(f"no action {action!r}"))

    async def confirm_delete_service(self, request: Request, service: str) -> Response:
        async def load(api: PlatformApi) -> dict[str, Any]:
            found = await api.service(service)
            return {
                "s": found,
                "crumbs": [
                    ("Projects", "/projects"),
                    (found["project"], f"/projects/{found['project']}"),
                    (
                        found["environment"],
                        f"/projects/{found['project']}/environments/{found['environment']}",
                    ),
                    (service, None),
                ],
            }

        return await self.signed_in_page(request, "service_delete.html", load)

    async def _after(
        self,
        request: Request,
        session: Session | None,
        project: str,
        env: str,
        done: JSON | PhemeralError,
        message: Callable[[JSON], str],
    ) -> Response:
        if isinstance(done, PhemeralError):
            if isinstance(done, NotFound):
                return self.error_page(request, session, done)
            return await self.environment_page(
                request, session, project, env, problem=done.message, status_code=done.http_status
            )
        return await self.environment_page(request, session, project, env, notice=message(done))
