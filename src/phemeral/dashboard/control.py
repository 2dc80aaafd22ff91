"""The dashboard's view of the control plane: the documented HTTP API, called in-process.

Pages never reach into the store: they ask the same `/api` every other client uses, through an
ASGI transport on the running app (no socket, no second server), authenticated with the admin
token. API errors come back as the `PhemeralError` subclass whose status they carry, with the
API's message intact, so pages can show it to people.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from phemeral.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PhemeralError,
    StoreUnavailable,
    Unauthorized,
)

JSON = dict[str, Any]

_BY_STATUS: Mapping[int, type[PhemeralError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    400: InvalidInput,
    503: StoreUnavailable,
}


def error_from_response(status: int, body: object) -> PhemeralError:
    """The error an API answer stands for, keeping its message for people."""
    message = f"the API answered {status}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    return _BY_STATUS.get(status, PhemeralError)(message)


def _query(params: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items() if v not in (None, "")}


class PlatformApi:
    """Typed-enough calls to `/api` over an in-process transport (or any httpx transport)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, token: str) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            base_url="http://control-plane",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        json: object = None,
    ) -> Any:
        response = await self._client.request(method, path, params=_query(params or {}), json=json)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, body)
        return body

    # projects and environments
    async def projects(
        self, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[JSON], str | None]:
        """One page of projects by name, and the cursor of the next one (None on the last)."""
        body = await self._call("GET", "/api/projects", params={"cursor": cursor, "limit": limit})
        return _items(body), _next(body)

    async def project(self, name: str) -> JSON:
        body: JSON = await self._call("GET", f"/api/projects/{_seg(name)}")
        return body

    async def update_project(self, name: str, changes: Mapping[str, object]) -> JSON:
        body: JSON = await self._call("PATCH", f"/api/projects/{_seg(name)}", json=dict(changes))
        return body

    async def environments(self, project: str) -> list[JSON]:
        body = await self._call("GET", f"/api/projects/{_seg(project)}/environments")
        return _items(body)

    async def webhook_secret(self, project: str) -> str | None:
        body = await self._call("GET", f"/api/projects/{_seg(project)}/webhook")
        if isinstance(body, dict):
            value = body.get("secret")
            return str(value) if value else None
        return None

    async def promotions(self, project: str, environment: str) -> list[JSON]:
        """The moves of an environment's current pointer, newest first."""
        body = await self._call(
            "GET",
            f"/api/projects/{_seg(project)}/environments/{_seg(environment)}/promotions",
        )
        return _items(body)

    # custom domains and HTTPS settings
    async def custom_domains(self, project: str, environment: str) -> list[JSON]:
        body = await self._call("GET", "/api/domains", params={"project": project})
        return [d for d in _items(body) if d.get("environment") == environment]

    async def add_domain(self, project: str, environment: str, domain: str) -> JSON:
        fields = {"name": domain, "project": project, "environment": environment}
        body: JSON = await self._call("POST", "/api/domains", json=fields)
        return body

    async def domain(self, domain: str) -> JSON:
        body: JSON = await self._call("GET", f"/api/domains/{_seg(domain)}")
        return body

    async def renew_domain(self, domain: str) -> JSON:
        body: JSON = await self._call("POST", f"/api/domains/{_seg(domain)}/renew")
        return body

    async def remove_domain(self, domain: str) -> JSON:
        await self._call("DELETE", f"/api/domains/{_seg(domain)}")
        return {"name": domain}

    async def update_environment(
        self, project: str, environment: str, changes: Mapping[str, object]
    ) -> JSON:
        body: JSON = await self._call(
            "PATCH",
            f"/api/projects/{_seg(project)}/environments/{_seg(environment)}",
            json=dict(changes),
        )
        return body

    # backing services
    async def services(self, project: str, environment: str) -> list[JSON]:
        body = await self._call(
            "GET", f"/api/projects/{_seg(project)}/services", params={"environment": environment}
        )
        return _items(body)

    async def service(self, name: str) -> JSON:
        body: JSON = await self._call("GET", f"/api/services/{_seg(name)}")
        return body

    async def create_service(self, fields: Mapping[str, object]) -> JSON:
        body: JSON = await self._call("POST", "/api/services", json=dict(fields))
        return body

    async def rotate_service(self, name: str) -> JSON:
        body: JSON = await self._call("POST", f"/api/services/{_seg(name)}/credentials/rotate")
        return body

    async def backup_service(self, name: str) -> JSON:
        body: JSON = await self._call("POST", f"/api/services/{_seg(name)}/backups")
        return body

    async def delete_service(self, name: str) -> JSON:
        body: JSON = await self._call("DELETE", f"/api/services/{_seg(name)}")
        return body

    async def deployments(
        self,
        project: str,
        *,
        environment: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[JSON], str | None]:
        body = await self._call(
            "GET",
            f"/api/projects/{_seg(project)}/deployments",
            params={"environment": environment, "cursor": cursor, "limit": limit},
        )
        return _items(body), _next(body)

    async def deployment(self, deployment_id: str) -> JSON:
        body: JSON = await self._call("GET", f"/api/deployments/{_seg(deployment_id)}")
        return body

    async def promote(self, deployment_id: str, reason: str | None) -> JSON:
        body: JSON = await self._call(
            "POST",
            f"/api/deployments/{_seg(deployment_id)}/promote",
            json={"reason": reason} if reason else {},
        )
        return body

    # logs
    async def build_log(
        self, deployment_id: str, *, cursor: str | None = None, limit: int = 1000
    ) -> tuple[list[JSON], str | None]:
        body = await self._call(
            "GET",
            f"/api/deployments/{_seg(deployment_id)}/logs/build",
            params={"cursor": cursor, "limit": limit},
        )
        return _lines(body), _next(body)

    async def runtime_log(
        self,
        deployment_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        order: str = "desc",
        stream: str | None = None,
        text: str | None = None,
    ) -> tuple[list[JSON], str | None]:
        body = await self._call(
            "GET",
            f"/api/deployments/{_seg(deployment_id)}/logs/runtime",
            params={
                "cursor": cursor,
                "limit": limit,
                "order": order,
                "stream": stream,
                "q": text,
            },
        )
        return _lines(body), _next(body)


def _seg(value: str) -> str:
    """One URL path segment; names and ids are DNS-safe, but never trust that here."""
    return quote(value, safe="")


def _items(body: object) -> list[JSON]:
    if isinstance(body, list):
        return [x for x in body if isinstance(x, dict)]
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return [x for x in body["items"] if isinstance(x, dict)]
    return []


def _lines(body: object) -> list[JSON]:
    if isinstance(body, dict) and isinstance(body.get("lines"), list):
        return [x for x in body["lines"] if isinstance(x, dict)]
    return []


def _next(body: object) -> str | None:
    if isinstance(body, dict):
        value = body.get("next_cursor")
        return str(value) if value else None
    return None
