"""An environment's custom domains on its page: attach, renew the certificate, detach; and its
HTTPS settings (redirect to HTTPS, HSTS). Every action goes through the documented API."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from phemeral.dashboard.services import ServicePages
from phemeral.errors import NotFound, PhemeralError


class DomainPages(ServicePages):
    async def add_domain(self, request: Request, name: str, env: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        domain = fields.get("domain", "").strip()
        done = await self.calling(request, lambda api: api.add_domain(name, env, domain))
        return await self._after(
            request,
            session,
            name,
            env,
            done,
            lambda d: (
                f"Attached {d['name']}. Create the DNS record {d['name']}. {d['dns']['type']} "
                f"{d['dns']['value']}. — the certificate is requested over HTTP-01 once the "
                "name reaches this server."
            ),
        )

    async def domain_action(self, request: Request, domain: str, action: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        found = await self.calling(request, lambda api: api.domain(domain))
        if isinstance(found, PhemeralError):
            return self.error_page(request, session, found)
        project, env = str(found["project"]), str(found["environment"])
        if action == "renew":
            done = await self.calling(request, lambda api: api.renew_domain(domain))
            return await self._after(
                request,
                session,
                project,
                env,
                done,
                lambda d: (
                    f"Renewal of {domain} requested; the current certificate serves meanwhile."
                ),
            )
        if action == "remove":
            done = await self.calling(request, lambda api: api.remove_domain(domain))
            return await self._after(
                request, session, project, env, done, lambda d: f"Detached {domain}."
            )
        return self.error_page(request, session, NotFound(f"no action {action!r}"))

    async def save_https(self, request: Request, name: str, env: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        raw_age = fields.get("hsts_max_age", "0").strip() or "0"
        changes: dict[str, object] = {"https_redirect": fields.get("https_redirect") == "on"}
        changes["hsts_max_age"] = int(raw_age) if raw_age.isdigit() else -1  # the API says why
        done = await self.calling(request, lambda api: api.update_environment(name, env, changes))
        return await self._after(
            request, session, name, env, done, lambda d: "HTTPS settings saved."
        )
