"""The dashboard's pages: a FastAPI router the control-plane app includes at ``/``.

Every page is server-rendered HTML over the documented `/api` (see `control`), so it works
with JavaScript off; `static/dashboard.js` only adds live updates. Sign-in takes the admin token
and sets a signed, HttpOnly, SameSite=Lax session cookie; every form carries a CSRF token
bound to that session (see `session`).

The handlers live by concept: `signin`, `projects` (projects and environments), `deployments`
(deployments, promote, redeploy), `live` (server-sent events); `page` holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from phemeral.dashboard.deployments import DeploymentPages
from phemeral.dashboard.domains import DomainPages
from phemeral.dashboard.live import LiveEvents
from phemeral.dashboard.page import STATIC_TYPES
from phemeral.dashboard.signin import SignInPages
from phemeral.errors import ConfigError
from phemeral.settings import Settings

# A file name, not a secret: the server writes the token there on first start (phemeral.api.auth).
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105


def create_router(
    settings: Settings, admin_token: str | Callable[[], str] | None = None
) -> APIRouter:
    """The dashboard's routes. ``admin_token`` is the token (or a function reading it) that
    signs people in; the same token authenticates the dashboard's in-process API calls. By
    default it is read from ``{data_dir}/admin-token``, which the server writes on first start.
    """
    pages = _Pages(settings, admin_token or AdminTokenFile(settings.data_dir / ADMIN_TOKEN_FILE))
    router = APIRouter(include_in_schema=False)
    add = router.add_api_route
    add("/", pages.home, methods=["GET"])
    add("/login", pages.login_form, methods=["GET"])
    add("/login", pages.login, methods=["POST"])
    add("/logout", pages.logout, methods=["POST"])
    add("/projects", pages.projects, methods=["GET"])
    add("/projects/{name}", pages.project, methods=["GET"])
    add("/projects/{name}/settings", pages.save_settings, methods=["POST"])
    add("/projects/{name}/webhook-secret", pages.reveal_secret, methods=["POST"])
    add("/projects/{name}/deployments", pages.deployments, methods=["GET"])
    add("/projects/{name}/environments/{env}", pages.environment, methods=["GET"])
    add("/projects/{name}/environments/{env}/services", pages.create_service, methods=["POST"])
    add("/projects/{name}/environments/{env}/domains", pages.add_domain, methods=["POST"])
    add("/projects/{name}/environments/{env}/https", pages.save_https, methods=["POST"])
    add("/domains/{domain}/{action}", pages.domain_action, methods=["POST"])
    add("/services/{service}/delete", pages.confirm_delete_service, methods=["GET"])
    add("/services/{service}/{action}", pages.service_action, methods=["POST"])
    add("/deployments/{deployment_id}", pages.deployment, methods=["GET"])
    add("/deployments/{deployment_id}/promote", pages.confirm_promote, methods=["GET"])
    add("/deployments/{deployment_id}/promote", pages.promote, methods=["POST"])
    add("/deployments/{deployment_id}/redeploy", pages.redeploy, methods=["POST"])
    add("/deployments/{deployment_id}/build-log/events", pages.build_events, methods=["GET"])
    add("/deployments/{deployment_id}/runtime-log/events", pages.runtime_events, methods=["GET"])
    add("/_dashboard/{asset}", pages.asset, methods=["GET"])
    return router


class AdminTokenFile:
    """Reads the admin token file, again only when it changes (replacing it signs people out)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, str] | None = None

    def __call__(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
            if self._seen is None or self._seen[0] != mtime:
                self._seen = (mtime, self.path.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"cannot read the admin token at {self.path}: {exc}") from exc
        if not self._seen[1]:
            raise ConfigError(f"the admin token file {self.path} is empty")
        return self._seen[1]


class _Pages(SignInPages, DomainPages, DeploymentPages, LiveEvents):
    """Every page handler, sharing one `Pages` state (settings, token, templates, assets)."""

    async def asset(self, asset: str) -> Response:
        if asset not in self.assets:
            return Response("not found", status_code=404)
        return Response(
            self.assets[asset],
            media_type=STATIC_TYPES[asset],
            headers={"Cache-Control": "public, max-age=300"},
        )
