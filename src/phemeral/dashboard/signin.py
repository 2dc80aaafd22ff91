"""Signing in and out: the admin token for a signed session cookie; the sign-in form's CSRF
token is bound to a short-lived nonce cookie."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from phemeral.dashboard import present
from phemeral.dashboard.page import Pages
from phemeral.dashboard.session import (
    LOGIN_COOKIE,
    LOGIN_TTL_SECONDS,
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    csrf_token,
    csrf_valid,
    issue_session,
    new_nonce,
    token_matches,
)


class SignInPages(Pages):
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
