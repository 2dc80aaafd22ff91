"""What every dashboard page shares: the templates, the session and CSRF plumbing, the in-process
API client, rendering with the security headers, and the error and sign-in detours."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from phemeral.dashboard import present
from phemeral.dashboard.control import PlatformApi
from phemeral.dashboard.session import (
    SESSION_COOKIE,
    Session,
    csrf_token,
    csrf_valid,
    read_session,
    session_key,
)
from phemeral.errors import NotFound, PhemeralError
from phemeral.settings import Settings

T = TypeVar("T")
# Pages load only their own stylesheet and script: injected markup could not run anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

NOTICES = {
    "saved": "Settings saved. The start command applies to new deployments only.",
    "promoted": "Done: the environment's domains now route to the new current deployment.",
    "signed-out": "You are signed out.",
}

STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


def load_templates() -> Environment:
    env = Environment(
        loader=PackageLoader("phemeral.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=present.age,
        duration=present.duration,
        clock=present.clock,
        stamp=present.stamp,
        sha=present.short_sha,
        trigger=present.trigger_summary,
        instances=present.instance_summary,
        wakes_from=present.wake_summary,
        idle_memory=present.idle_memory,
        is_error=present.is_error_line,
    )
    return env


def read_static(name: str) -> bytes:
    return (resources.files("phemeral.dashboard") / "static" / name).read_bytes()


class Pages:
    """The plumbing of the page handlers (`phemeral.dashboard.routes` composes them)."""

    def __init__(self, settings: Settings, admin_token: str | Callable[[], str]) -> None:
        self.settings = settings
        self._token = admin_token
        self.templates = load_templates()
        self.assets = {name: read_static(name) for name in STATIC_TYPES}

    def token(self) -> str:
        return self._token() if callable(self._token) else self._token

    def key(self) -> bytes:
        return session_key(self.token())

    def session(self, request: Request) -> Session | None:
        return read_session(self.key(), request.cookies.get(SESSION_COOKIE), time.time())

    def api(self, request: Request) -> PlatformApi:
        return PlatformApi(httpx.ASGITransport(app=request.app), self.token())

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        csrf = context.pop("csrf", None)
        if csrf is None:
            csrf = csrf_token(self.key(), session.nonce) if session else ""
        html = self.templates.get_template(template).render(
            signed_in=session is not None,
            csrf=csrf,
            now=datetime.now(UTC),
            notice=context.pop("notice", notice),
            crumbs=context.pop("crumbs", None),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def error_page(
        self, request: Request, session: Session | None, error: PhemeralError
    ) -> HTMLResponse:
        heading = "Not found" if isinstance(error, NotFound) else "Something went wrong"
        return self.render(
            request,
            "error.html",
            session,
            status_code=error.http_status,
            heading=heading,
            message=error.message,
        )

    def refused(self, request: Request, session: Session | None) -> HTMLResponse:
        return self.render(
            request,
            "error.html",
            session,
            status_code=403,
            heading="Form expired",
            message="This form was refused because its security token is missing or stale. "
            "Go back, reload the page and try again.",
        )

    @staticmethod
    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    async def checked_form(
        self, request: Request
    ) -> tuple[Session | None, Mapping[str, str] | Response]:
        """The session and posted fields, or the response refusing the post."""
        session = self.session(request)
        if session is None:  # a form posted after the session ended: start from the list
            return None, RedirectResponse("/login?next=%2Fprojects", status_code=303)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not csrf_valid(self.key(), session.nonce, fields.get("csrf_token")):
            return session, self.refused(request, session)
        return session, fields

    async def calling(
        self, request: Request, call: Callable[[PlatformApi], Awaitable[T]]
    ) -> T | PhemeralError:
        """What ``call`` reads or does through the API, or the error it raised."""
        api = self.api(request)
        try:
            return await call(api)
        except PhemeralError as exc:
            return exc
        finally:
            await api.aclose()

    async def from_api(
        self,
        request: Request,
        session: Session | None,
        template: str,
        load: Callable[[PlatformApi], Awaitable[Mapping[str, Any]]],
    ) -> Response:
        """``template`` rendered with what ``load`` reads from the API; an error's own page."""
        context = await self.calling(request, load)
        if isinstance(context, PhemeralError):
            return self.error_page(request, session, context)
        return self.render(request, template, session, **context)

    async def signed_in_page(
        self,
        request: Request,
        template: str,
        load: Callable[[PlatformApi], Awaitable[Mapping[str, Any]]],
    ) -> Response:
        """`from_api` for a signed-in person; anyone else is sent to sign in first."""
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        return await self.from_api(request, session, template, load)
