"""GitHub App authentication: the App's JWT, installation access tokens, and when to refresh them.

Pure (every clock reading is an argument): `load_private_key` (a PEM, or `InvalidInput` saying
what is wrong), `app_jwt` (RS256, ``iat`` = now − 60 s, ``exp`` = now + 9 min, ``iss`` = the App
id, as GitHub documents), `needs_refresh` (a token is renewed `REFRESH_MARGIN` before it
expires), `parse_access_token` and `github_message`.

The shell, `InstallationTokens`, is one in-memory cache per control plane: one token per
(App, installation), reused until it is within the margin of its expiry, then renewed with
``POST {api}/app/installations/{id}/access_tokens``. Concurrent callers share one request
(single flight). `drop` forgets a token GitHub refused (401), so the next caller gets a fresh
one. An installation id a project does not give is asked of GitHub once per repository
(``GET {api}/repos/{owner}/{repo}/installation``). Both caches are keyed by the App's key too:
naming an App id with another key never reaches tokens the right key obtained. Errors are
`GitHubRefused` carrying GitHub's status and ``message`` intact; neither the key, the JWT nor
a token ever reaches a message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from phemeral.errors import GitHubRefused, InvalidInput

REFRESH_MARGIN = timedelta(minutes=5)
JWT_BACKDATE = 60  # seconds: GitHub recommends iat 60 s in the past against clock drift
JWT_LIFETIME = 9 * 60  # seconds: GitHub refuses more than 10 minutes
MAX_KEY_BYTES = 16 * 1024
MAX_ID = 2**63 - 1
API_VERSION = "2022-11-28"


@dataclass(frozen=True)
class AppCredentials:
    """A GitHub App: its id and its private key (PEM). The key never appears in a repr."""

    app_id: int
    private_key: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Tells keys apart in the caches: a token or installation found with one key is never
        handed to a caller that names the same App id with another (wrong, or someone else's)
        key."""
        return hashlib.sha256(self.private_key.strip().encode()).hexdigest()


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: datetime


def check_id(value: object, what: str) -> int:
    """A positive GitHub id (App or installation) from an int or a string of digits."""
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise InvalidInput(
            f"{what} must be a positive whole number (GitHub shows it), not {value!r}"
        )
    return value


def load_private_key(pem: str) -> RSAPrivateKey:
    """The App's RSA private key, or `InvalidInput` saying why the text is not one."""
    text = pem.strip()
    if not text:
        raise InvalidInput("the GitHub App private key is empty")
    if len(text) > MAX_KEY_BYTES:
        raise InvalidInput("the GitHub App private key is too long to be a PEM key")
    if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
        raise InvalidInput(
            "the GitHub App private key is not PEM: expected the .pem file GitHub generated "
            "('-----BEGIN RSA PRIVATE KEY-----' …)"
        )
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError as exc:  # cryptography's way of saying "this one needs a password"
        raise InvalidInput(
            "the GitHub App private key is encrypted: give the key as GitHub generated it "
            "(openssl rsa -in key.pem -out plain.pem removes a passphrase)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = "its content cannot be read (truncated or damaged?)"
        raise InvalidInput(f"the GitHub App private key is not a usable PEM key: {reason}") from exc
    if not isinstance(key, RSAPrivateKey):
        raise InvalidInput("the GitHub App private key must be an RSA key (GitHub's App keys are)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app_id: int, key: RSAPrivateKey, now: datetime) -> str:
    """The JWT that authenticates as the App (RS256), valid from now − 60 s to now + 9 min."""
    issued = int(now.timestamp())
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"iat": issued - JWT_BACKDATE, "exp": issued + JWT_LIFETIME, "iss": str(app_id)}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def needs_refresh(expires_at: datetime, now: datetime, margin: timedelta = REFRESH_MARGIN) -> bool:
    """True when a token expiring at ``expires_at`` must be renewed before use at ``now``."""
    return expires_at - margin <= now


def parse_expiry(text: object) -> datetime:
    """GitHub's ``expires_at`` (``2026-11-30T10:00:00Z``) as an aware UTC datetime."""
    if not isinstance(text, str):
        raise ValueError("expires_at is missing")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("expires_at has no time zone")
    return parsed.astimezone(UTC)


def parse_access_token(data: object) -> InstallationToken:
    """``{"token": ..., "expires_at": ...}`` from the access_tokens answer (`GitHubRefused`
    when it is not that shape)."""
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise GitHubRefused("GitHub's access_tokens answer has no token")
    try:
        expires_at = parse_expiry(data.get("expires_at") if isinstance(data, dict) else None)
    except ValueError as exc:
        raise GitHubRefused(
            f"GitHub's access_tokens answer has no valid expires_at: {exc}"
        ) from exc
    return InstallationToken(token, expires_at)


def github_message(status: int, body: bytes) -> str:
    """``HTTP 401: A JSON web token could not be decoded`` from an error answer."""
    message = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        message = " ".join(data["message"].split())[:300]
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _headers(bearer: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {bearer}",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "phemeral",
    }


class InstallationTokens:
    """Installation tokens by (App id, installation id), renewed before they expire."""

    def __init__(
        self,
        api_url: str,
        *,
        clock: Callable[[], datetime] = _utcnow,
        margin: timedelta = REFRESH_MARGIN,
        timeout: float = 10.0,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._clock = clock
        self._margin = margin
        self._timeout = timeout
        # keyed by (App id, key fingerprint, installation id)
        self._cached: dict[tuple[int, str, int], InstallationToken] = {}
        self._flights: dict[tuple[int, str, int], asyncio.Task[InstallationToken]] = {}
        self._installations: dict[tuple[int, str, str], int] = {}
        self._keys: dict[str, RSAPrivateKey] = {}  # parsed keys by fingerprint

    async def token(self, app: AppCredentials, installation_id: int) -> str:
        """A token of the installation valid for at least the margin; one request for many
        concurrent callers."""
        key = (app.app_id, app.fingerprint, installation_id)
        cached = self._cached.get(key)
        if cached is not None and not needs_refresh(cached.expires_at, self._clock(), self._margin):
            return cached.token
        flight = self._flights.get(key)
        if flight is None or flight.get_loop() is not asyncio.get_running_loop():
            flight = asyncio.get_running_loop().create_task(
                self._issue(app, installation_id), name="github-app-token"
            )
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        issued = await asyncio.shield(flight)
        return issued.token

    def _landed(self, key: tuple[int, str, int], done: asyncio.Task[InstallationToken]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter got it already

    def drop(self, token: str) -> None:
        """Forget ``token`` (GitHub answered 401 with it): the next caller gets a fresh one."""
        for key, cached in list(self._cached.items()):
            if cached.token == token:
                del self._cached[key]

    async def _jwt(self, app: AppCredentials) -> str:
        # Parsing a key checks it (0.1 s of CPU and more): once per key, off the event loop.
        key = self._keys.get(app.fingerprint)
        if key is None:
            try:
                key = await asyncio.to_thread(load_private_key, app.private_key)
            except InvalidInput as exc:
                raise GitHubRefused(f"GitHub App {app.app_id}: {exc.message}") from exc
            self._keys[app.fingerprint] = key
        return app_jwt(app.app_id, key, self._clock())

    async def _issue(self, app: AppCredentials, installation_id: int) -> InstallationToken:
        url = f"{self._api_url}/app/installations/{installation_id}/access_tokens"
        what = f"GitHub App {app.app_id} installation {installation_id}"
        bearer = await self._jwt(app)
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, headers=_headers(bearer))
        except httpx.HTTPError as exc:
            raise GitHubRefused(
                f"{what}: no access token, GitHub unreachable ({type(exc).__name__})"
            ) from exc
        if response.status_code != 201:
            detail = github_message(response.status_code, response.content)
            raise GitHubRefused(f"{what}: GitHub refused an access token: {detail}")
        try:
            data = response.json()
        except ValueError as exc:
            raise GitHubRefused(f"{what}: GitHub's access token answer is not JSON") from exc
        issued = parse_access_token(data)
        self._cached[(app.app_id, app.fingerprint, installation_id)] = issued
        return issued

    async def installation_for(self, app: AppCredentials, full_name: str) -> int:
        """The installation of the App on ``owner/repo`` (asked of GitHub once, then cached)."""
        key = (app.app_id, app.fingerprint, full_name.lower())
        known = self._installations.get(key)
        if known is not None:
            return known
        owner, _, repo = full_name.partition("/")
        url = f"{self._api_url}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/installation"
        what = f"GitHub App {app.app_id}"
        bearer = await self._jwt(app)
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(url, headers=_headers(bearer))
        except httpx.HTTPError as exc:
            raise GitHubRefused(
                f"{what}: installation on {full_name} not found, GitHub unreachable "
                f"({type(exc).__name__})"
            ) from exc
        if response.status_code != 200:
            detail = github_message(response.status_code, response.content)
            hint = (
                " (is the App installed on that repository?)" if response.status_code == 404 else ""
            )
            raise GitHubRefused(f"{what}: no installation on {full_name}{hint}: {detail}")
        try:
            data = response.json()
        except ValueError:
            data = None
        installation_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(installation_id, bool) or not isinstance(installation_id, int):
            raise GitHubRefused(f"{what}: GitHub's installation answer for {full_name} has no id")
        self._installations[key] = installation_id
        return installation_id
