"""Request dependencies shared by the routers: the control plane and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from phemeral.api.auth import TokenChecker
from phemeral.deploys import ControlPlane


def control_plane(request: Request) -> ControlPlane:
    cp = request.app.state.cp
    assert isinstance(cp, ControlPlane)
    return cp


# Declares the scheme in the OpenAPI document; the check itself is `TokenChecker`'s.
bearer = HTTPBearer(auto_error=False, description="the admin token ({data_dir}/admin-token)")


def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The name of the token the request carries (raises Unauthorized otherwise)."""
    checker = request.app.state.tokens
    assert isinstance(checker, TokenChecker)
    return checker.actor(request.headers.get("authorization"))


CP = Annotated[ControlPlane, Depends(control_plane)]
Actor = Annotated[str, Depends(authenticated)]
