"""The one source of a project's GitHub token: statuses, preview comments and the builder's
fetch of a private repository all ask `github_auth`.

Which credential wins, most specific first:

1. the project's own GitHub App (``github_app_id`` + encrypted ``github_app_key``);
2. the project's access token (``repo_token``, encrypted);
3. the server's GitHub App (``phemeral serve --github-app-id --github-app-key-file``).

An App's installation is the project's ``github_installation_id`` when set, else asked of
GitHub for the repository (``GET /repos/{owner}/{repo}/installation``). Installation tokens
live in memory only (`ControlPlane.github_tokens`), renewed before they expire.
"""

from __future__ import annotations

from phemeral.deploys.plane import ControlPlane
from phemeral.github.app_auth import AppCredentials
from phemeral.github.repository import github_full_name, hosted_full_name
from phemeral.github.tokens import InstallationAuth, StaticToken, TokenProvider
from phemeral.store.views import get_project


def github_auth(
    cp: ControlPlane, project: str, *, full_name: str | None = None
) -> TokenProvider | None:
    """The project's token provider, None when it has no GitHub credential at all.

    ``full_name`` (owner/repo) finds the App's installation when the project does not name
    one and its repository URL is not on github.com (e.g. from a delivery's payload).
    Reads the database: call it off the event loop.
    """
    with cp.store.read() as s:
        p = get_project(s, project)
        app_id, sealed_key, installation = (
            p.github_app_id,
            p.github_app_key,
            p.github_installation_id,
        )
        sealed_token, repo_url = p.repo_token, p.repo_url
    # github.com's name, else the payload's, else the URL's path (GitHub Enterprise Server)
    name = github_full_name(repo_url or "") or full_name or hosted_full_name(repo_url or "")
    if app_id is not None and sealed_key is not None:
        app = AppCredentials(app_id, cp.box.decrypt(sealed_key))
        return InstallationAuth(cp.github_tokens, app, installation, name)
    if sealed_token is not None:
        return StaticToken(cp.box.decrypt(sealed_token))
    server_app = cp.github_app
    if server_app is not None:
        return InstallationAuth(cp.github_tokens, server_app, installation, name)
    return None


def has_github_credentials(cp: ControlPlane, app_id: int | None, token: str | None) -> bool:
    """True when a project with these (sealed) columns gets a `TokenProvider`."""
    return app_id is not None or token is not None or cp.settings.github_app_id is not None
