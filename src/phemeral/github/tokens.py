"""Where a GitHub token comes from: one `TokenProvider` per project, whatever kind it has.

- `StaticToken`: the project's personal (or fine-grained) access token, stored encrypted;
- `InstallationAuth`: a GitHub App installation token from `InstallationTokens` (renewed
  before it expires; one refused with 401 is dropped and a fresh one is tried once).

`send_authorized` is the one way statuses, comments and the builder's fetch get their token.
Providers never put a token in a repr, a message or a log line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from phemeral.errors import GitHubRefused
from phemeral.github.app_auth import AppCredentials, InstallationTokens


class TokenProvider(Protocol):
    @property
    def kind(self) -> str:
        """What the token is, for people: ``access token``, ``GitHub App 12 installation``."""
        ...

    async def token(self) -> str:
        """A token to send now (`GitHubRefused` when none can be had)."""
        ...

    async def rejected(self, token: str) -> bool:
        """GitHub answered 401 with ``token``; True when a fresh one is worth one more try."""
        ...


@dataclass(frozen=True)
class StaticToken:
    value: str = field(repr=False)
    kind: str = "access token"

    async def token(self) -> str:
        return self.value

    async def rejected(self, token: str) -> bool:
        return False  # the same token again would be refused again


@dataclass(frozen=True)
class InstallationAuth:
    """The App's installation on the project's repository (its id given, or asked of GitHub)."""

    tokens: InstallationTokens = field(repr=False)
    app: AppCredentials
    installation_id: int | None
    full_name: str | None

    @property
    def kind(self) -> str:
        return f"GitHub App {self.app.app_id} installation token"

    async def token(self) -> str:
        installation = self.installation_id
        if installation is None:
            if not self.full_name:
                raise GitHubRefused(
                    f"GitHub App {self.app.app_id}: the project has no installation id and its "
                    "repository is not on github.com; set one (phemeral projects set "
                    "--github-installation-id)"
                )
            installation = await self.tokens.installation_for(self.app, self.full_name)
        return await self.tokens.token(self.app, installation)

    async def rejected(self, token: str) -> bool:
        self.tokens.drop(token)
        return True


async def send_authorized(
    auth: TokenProvider, send: Callable[[str], Awaitable[httpx.Response]]
) -> httpx.Response:
    """``send(token)``; after a 401, once more with a fresh token when the provider has one."""
    token = await auth.token()
    response = await send(token)
    if response.status_code == 401 and await auth.rejected(token):
        response = await send(await auth.token())
    return response
