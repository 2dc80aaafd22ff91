"""The dashboard's pages: a FastAPI router the control-plane app includes at ``/``.

Every page is server-rendered HTML over the documented `/api` (see `control`), so it works
with JavaScript off; `static/dashboard.js` only adds live updates. Sign-in takes the admin token
and sets a signed, HttpOnly, SameSite=Lax session cookie; every form carries a CSRF token
bound to that session (see `session`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from phemeral.dashboard import present
from phemeral.dashboard.control import JSON, ControlPlane
from phemeral.dashboard.redeploy import can_redeploy, redeploy
from phemeral.dashboard.session import (
    LOGIN_COOKIE,
    LOGIN_TTL_SECONDS,
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    Session,
    csrf_token,
    csrf_valid,
    issue_session,
    new_nonce,
    read_session,
    session_key,
    token_matches,
)
from phemeral.deploys import ControlPlane as ControlPlaneState
from phemeral.errors import ConfigError, Conflict, NotFound, PhemeralError
from phemeral.settings import Settings

# A file name, not a secret: the server writes the token there on first start (phemeral.api.auth).
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105
DASHBOARD_ACTOR = "admin (dashboard)"
# Pages load only their own stylesheet and script: injected markup could not run anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
RECENT_DEPLOYMENTS = 10
PAGE_SIZE = 20
RUNTIME_PAGE_SIZE = 100
BUILD_LOG_MAX_LINES = 10_000
BUILD_LOG_PAGE = 5_000  # the API's largest page: one call for most build logs
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
ROLLBACK_CANDIDATES = 20

NOTICES = {
    "saved": "Settings saved. The start command applies to new deployments only.",
    "promoted": "Done: the environment's domains now route to the new current deployment.",
    "signed-out": "You are signed out.",
}

_STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


def _templates() -> Environment:
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
        is_error=present.is_error_line,
    )
    return env


def _static(name: str) -> bytes:
    return (resources.files("phemeral.dashboard") / "static" / name).read_bytes()


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


class _Pages:
    def __init__(self, settings: Settings, admin_token: str | Callable[[], str]) -> None:
        self.settings = settings
        self._token = admin_token
        self.templates = _templates()
        self.assets = {name: _static(name) for name in _STATIC_TYPES}

    # plumbing ---------------------------------------------------------------------------

    def token(self) -> str:
        return self._token() if callable(self._token) else self._token

    def key(self) -> bytes:
        return session_key(self.token())

    def session(self, request: Request) -> Session | None:
        return read_session(self.key(), request.cookies.get(SESSION_COOKIE), time.time())

    def api(self, request: Request) -> ControlPlane:
        return ControlPlane(httpx.ASGITransport(app=request.app), self.token())

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

    # sign-in ----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        target = "/projects" if self.session(request) else "/login"
        return RedirectResponse(target, status_code=303)

    async def login_form(self, request: Request, next: str = "/projects") -> Response:
        if self.session(request):
            return RedirectResponse(present.safe_next(next), status_code=303)
        return self.login_page(request, next)

    def login_page(
        self, request: Request, next: str, problem: str | None = None, status_code: int = 200
    ) -> Response:
        nonce = new_nonce()
        response = self.render(
            request,
            "login.html",
            None,
            status_code=status_code,
            next=present.safe_next(next),
            problem=problem,
            # the login form's CSRF token is bound to a fresh nonce in a short-lived cookie
            csrf=csrf_token(self.key(), nonce),
        )
        self.set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_TTL_SECONDS)
        return response

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        next_url = present.safe_next(fields.get("next"))
        if not csrf_valid(self.key(), request.cookies.get(LOGIN_COOKIE), fields.get("csrf_token")):
            return self.login_page(
                request,
                next_url,
                "The sign-in form expired or came from another site; please try again.",
                status_code=403,
            )
        given = fields.get("token", "").strip()
        if not given or not token_matches(given, self.token()):
            return self.login_page(request, next_url, "That token is not valid.", status_code=401)
        response = RedirectResponse(next_url, status_code=303)
        cookie = issue_session(self.key(), new_nonce(), time.time())
        self.set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_TTL_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        _session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        response = RedirectResponse("/login?notice=signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # projects ---------------------------------------------------------------------------

    async def projects(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        api = self.api(request)
        try:
            items = await api.projects()
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        items.sort(key=lambda p: str(p.get("name", "")))
        return self.render(request, "projects.html", session, projects=items)

    def with_urls(self, envs: list[JSON]) -> list[JSON]:
        return [
            {**e, "urls": present.environment_urls(e, self.settings.url_for_label)} for e in envs
        ]

    def webhook_url(self) -> str:
        port = "" if self.settings.port in (80, 443) else f":{self.settings.port}"
        return f"http://{self.settings.base_domain}{port}/api/webhooks/github"

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
        api = self.api(request)
        try:
            project = await api.project(name)
            envs = await api.environments(name)
            recent, _ = await api.deployments(name, limit=RECENT_DEPLOYMENTS)
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        return self.render(
            request,
            "project.html",
            session,
            status_code=status_code,
            project=project,
            environments=self.with_urls(envs),
            recent=recent,
            webhook_url=self.webhook_url(),
            webhook_secret=webhook_secret,
            problem=problem,
            crumbs=[("Projects", "/projects"), (name, None)],
        )

    async def save_settings(self, request: Request, name: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        changes = {
            key: fields.get(key, "").strip() or None
            for key in ("repo_url", "root_dir", "start_command")
        }
        api = self.api(request)
        try:
            await api.update_project(name, changes)
        except NotFound as exc:
            return self.error_page(request, session, exc)
        except PhemeralError as exc:  # a value was refused: say why, on the same form
            return await self.project_page(
                request, session, name, problem=exc.message, status_code=exc.http_status
            )
        finally:
            await api.aclose()
        return RedirectResponse(f"/projects/{name}?notice=saved", status_code=303)

    async def reveal_secret(self, request: Request, name: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        api = self.api(request)
        try:
            secret = await api.webhook_secret(name)
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        return await self.project_page(
            request, session, name, webhook_secret=secret or "(none set)"
        )

    # deployments ------------------------------------------------------------------------

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
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        limit = max(1, min(limit, 100))
        api = self.api(request)
        try:
            project = await api.project(name)
            envs = await api.environments(name)
            items, next_cursor = await self.filtered_deployments(
                api, name, environment or None, status or None, cursor or None, want=limit
            )
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        base = {"environment": environment, "status": status}
        if limit != PAGE_SIZE:
            base["limit"] = str(limit)
        newer_query, older_query = present.log_pages(base, cursor, trail, next_cursor)
        return self.render(
            request,
            "deployments.html",
            session,
            project=project,
            environments=envs,
            environment=environment,
            status=status,
            items=items,
            cursor=cursor,
            limit=limit if limit != PAGE_SIZE else None,
            first_query=urlencode({k: v for k, v in base.items() if v}),
            newer_query=newer_query,
            older_query=older_query,
            crumbs=[("Projects", "/projects"), (name, f"/projects/{name}"), ("Deployments", None)],
        )

    @staticmethod
    async def filtered_deployments(
        api: ControlPlane,
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
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        api = self.api(request)
        try:
            d = await api.deployment(deployment_id)
            # while someone pages or filters runtime logs, the build log stays out of the way
            browsing_runtime = bool(cursor or stream or q)
            lines, build_cursor, seen = (
                ([], None, 0)
                if browsing_runtime
                else await self.whole_build_log(api, deployment_id)
            )
            rt_lines, older = await api.runtime_log(
                deployment_id,
                cursor=cursor or None,
                limit=max(10, min(limit, 1000)),
                order="desc",
                stream=stream or None,
                text=q or None,
            )
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        filters = {"stream": stream, "q": q}
        if limit != RUNTIME_PAGE_SIZE:
            filters["limit"] = str(limit)
        newer_query, older_query = present.log_pages(filters, cursor, trail, older)
        return self.render(
            request,
            "deployment.html",
            session,
            d=d,
            settings_rows=present.setting_rows(d.get("settings")),
            settings_warnings=present.setting_warnings(d.get("settings")),
            stages=present.group_stages(lines, str(d.get("status")), d.get("failure_reason")),
            build_hidden=browsing_runtime,
            build_cursor=build_cursor,
            build_seen=seen,
            build_truncated=len(lines) >= BUILD_LOG_MAX_LINES,
            build_shown=len(lines),
            can_redeploy=can_redeploy((d.get("trigger") or {}).get("kind"), d.get("status")),
            rt={
                "lines": rt_lines,
                "stream": stream,
                "q": q,
                "limit": filters.get("limit"),
                "newer_query": newer_query,
                "older_query": older_query,
            },
            crumbs=[
                ("Projects", "/projects"),
                (str(d.get("project")), f"/projects/{d.get('project')}"),
                (
                    str(d.get("environment")),
                    f"/projects/{d.get('project')}/environments/{d.get('environment')}",
                ),
                (deployment_id, None),
            ],
        )

    @staticmethod
    async def whole_build_log(
        api: ControlPlane, deployment_id: str
    ) -> tuple[list[JSON], str | None, int]:
        """Every build log line (up to a cap), plus where a live follower resumes: the last
        cursor the API gave and how many lines after it were already read."""
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

    async def confirm_promote(self, request: Request, deployment_id: str) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        api = self.api(request)
        try:
            d = await api.deployment(deployment_id)
            envs = await api.environments(str(d.get("project")))
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        env = next((e for e in envs if e.get("name") == d.get("environment")), {})
        return self.render(
            request,
            "promote.html",
            session,
            d=d,
            current_id=env.get("current_deployment_id"),
            crumbs=[
                ("Projects", "/projects"),
                (str(d.get("project")), f"/projects/{d.get('project')}"),
                (deployment_id, f"/deployments/{deployment_id}"),
                ("Promote", None),
            ],
        )

    async def promote(self, request: Request, deployment_id: str) -> Response:
        session, fields = await self.checked_form(request)
        if isinstance(fields, Response):
            return fields
        api = self.api(request)
        try:
            await api.promote(deployment_id, fields.get("reason", "").strip() or None)
            d = await api.deployment(deployment_id)
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
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

    # environments -----------------------------------------------------------------------

    async def environment(self, request: Request, name: str, env: str) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        api = self.api(request)
        try:
            project = await api.project(name)
            envs = self.with_urls(await api.environments(name))
            found = next((e for e in envs if e.get("name") == env), None)
            if found is None:
                raise NotFound(f"project {name!r} has no environment {env!r}")
            current_id = found.get("current_deployment_id")
            current = await api.deployment(str(current_id)) if current_id else None
            history, history_note = await self.history(api, name, env)
            candidates, more = await self.filtered_deployments(
                api, name, env, "successful", None, want=ROLLBACK_CANDIDATES
            )
        except PhemeralError as exc:
            return self.error_page(request, session, exc)
        finally:
            await api.aclose()
        return self.render(
            request,
            "environment.html",
            session,
            project=project,
            env=found,
            current=current,
            history=history,
            history_note=history_note,
            candidates=candidates,
            candidates_more=bool(more),
            crumbs=[("Projects", "/projects"), (name, f"/projects/{name}"), (env, None)],
        )

    @staticmethod
    async def history(api: ControlPlane, project: str, env: str) -> tuple[list[JSON], str | None]:
        try:
            return await api.promotions(project, env), None
        except NotFound:
            return [], "The history of pointer moves is not available from this server."

    # live updates -----------------------------------------------------------------------

    async def build_events(
        self, request: Request, deployment_id: str, cursor: str = "", seen: int = 0
    ) -> Response:
        if self.session(request) is None:
            return Response("sign in first", status_code=401)
        # a browser reconnecting after a drop resumes after the last line it received
        resumed = present.parse_log_position(request.headers.get("last-event-id"))
        start = resumed or (cursor or None, max(0, seen))
        api = self.api(request)
        return _sse(self.follow_build(request, api, deployment_id, *start), api)

    async def follow_build(
        self,
        request: Request,
        api: ControlPlane,
        deployment_id: str,
        cursor: str | None,
        seen: int,
    ) -> AsyncIterator[str]:
        """New build log lines as SSE `data:` events (each `id:` its position in the log, for
        resuming), then `event: end` with the final status."""
        quiet = 0.0
        final: object = None
        while not await request.is_disconnected():
            page, nxt = await api.build_log(deployment_id, cursor=cursor, limit=BUILD_LOG_PAGE)
            fresh = page[seen:]
            for offset, line in enumerate(fresh, start=seen + 1):
                position = present.log_position(cursor, offset)
                yield f"id: {position}\ndata: {json.dumps(line, separators=(',', ':'))}\n\n"
            if nxt and page:
                cursor, seen = nxt, 0
            else:
                seen = len(page)
            if fresh:
                quiet = 0.0
                continue
            if final is not None:  # read once more after the status changed: nothing left
                yield f"event: end\ndata: {json.dumps({'status': final})}\n\n"
                return
            status = (await api.deployment(deployment_id)).get("status")
            if status != "building":
                final = status  # lines written just before the change are read next round
                continue
            await asyncio.sleep(POLL_SECONDS)
            quiet += POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"

    async def runtime_events(
        self, request: Request, deployment_id: str, stream: str = "", q: str = ""
    ) -> Response:
        if self.session(request) is None:
            return Response("sign in first", status_code=401)
        api = self.api(request)
        return _sse(self.follow_runtime(request, api, deployment_id, stream, q), api)

    async def follow_runtime(
        self, request: Request, api: ControlPlane, deployment_id: str, stream: str, q: str
    ) -> AsyncIterator[str]:
        """Runtime log lines that arrive from now on, oldest first, as SSE `data:` events."""

        async def newest() -> list[JSON]:
            lines, _ = await api.runtime_log(
                deployment_id, limit=200, order="desc", stream=stream or None, text=q or None
            )
            return lines

        top = _line_key((await newest())[:1])
        yield "event: ready\ndata: {}\n\n"  # lines from here on are new to the page
        quiet = 0.0
        while not await request.is_disconnected():
            await asyncio.sleep(POLL_SECONDS)
            lines = await newest()
            fresh: list[JSON] = []
            for line in lines:
                if _line_key([line]) == top:
                    break
                fresh.append(line)
            if lines:
                top = _line_key(lines[:1])
            for line in reversed(fresh):
                yield f"data: {json.dumps(line, separators=(',', ':'))}\n\n"
            quiet = 0.0 if fresh else quiet + POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"

    async def asset(self, asset: str) -> Response:
        if asset not in self.assets:
            return Response("not found", status_code=404)
        return Response(
            self.assets[asset],
            media_type=_STATIC_TYPES[asset],
            headers={"Cache-Control": "public, max-age=300"},
        )


def _line_key(lines: list[JSON]) -> tuple[object, ...] | None:
    if not lines:
        return None
    line = lines[0]
    return (line.get("timestamp"), line.get("instance"), line.get("stream"), line.get("message"))


def _sse(events: AsyncIterator[str], api: ControlPlane) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            async for event in events:
                yield event
        finally:
            await api.aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
