"""The HTTP API under ``/api`` (FastAPI): JSON in and out, bearer tokens, stable error shape.

`create_app(cp)` builds it around a `ControlPlane`; handlers find it at ``request.app.state.cp``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from phemeral import __version__
from phemeral.api import deployments, domains, logs, previews, projects, services
from phemeral.api.auth import TokenChecker
from phemeral.api.deps import authenticated
from phemeral.api.errors import install_error_handlers
from phemeral.api.gate import BodyLimits, Gate
from phemeral.deploys import ControlPlane

API_PREFIX = "/api"


def create_app(cp: ControlPlane, *, trust_forwarded: bool = False) -> FastAPI:
    """The API and the dashboard behind the `Gate` (token and body cap before any body is read).

    ``trust_forwarded``: the app is reached only through our router (which sets
    ``X-Forwarded-For``), so that header is the client's address.
    """
    app = FastAPI(
        title="Phemeral",
        version=__version__,
        description="Self-hostable platform for Python web apps.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.cp = cp
    app.state.tokens = TokenChecker(cp.store)
    install_error_handlers(app)
    app.add_middleware(
        Gate,
        tokens=app.state.tokens,
        limits=BodyLimits.for_uploads_of(cp.settings.max_upload_mb),
        trust_forwarded=trust_forwarded,
    )

    public = APIRouter(prefix=API_PREFIX)

    @public.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness without auth; ``database`` says whether the store answers."""
        try:
            with cp.store.read() as s:
                s.connection().exec_driver_sql("SELECT 1")
            database = "ok"
        except Exception:
            database = "unavailable"
        return {"status": "ok", "version": __version__, "database": database}

    app.include_router(public)
    private = [Depends(authenticated)]
    for module in (projects, deployments, logs, previews, services, domains):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=private)
    _include_webhooks(app)
    app.include_router(
        importlib.import_module("phemeral.dashboard.routes").create_router(cp.settings)
    )
    return app


def _include_webhooks(app: FastAPI) -> None:
    """``phemeral.api.webhooks.router`` (GitHub deliveries; signed, so no bearer token)."""
    if importlib.util.find_spec("phemeral.api.webhooks") is None:
        return
    webhooks = importlib.import_module("phemeral.api.webhooks")
    app.include_router(webhooks.router, prefix=API_PREFIX)


__all__ = ["API_PREFIX", "create_app"]
