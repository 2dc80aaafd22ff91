"""GitHub App authentication: the JWT and the refresh decision (pure), and installation tokens
against the local fake of GitHub's API (real HTTP): reuse, renewal near expiry, one request for
concurrent callers, a revoked token retried once, a wrong key refused with GitHub's words."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from phemeral.errors import GitHubRefused, InvalidInput
from phemeral.github.app_auth import (
    REFRESH_MARGIN,
    AppCredentials,
    InstallationTokens,
    app_jwt,
    check_id,
    github_message,
    load_private_key,
    needs_refresh,
    parse_access_token,
)
from phemeral.github.comments import CommentWriter
from phemeral.github.statuses import CommitState, StatusReporter
from phemeral.github.tokens import InstallationAuth, StaticToken

from .fake_github import BAD_JWT, FakeGitHub, start_fake_github

APP_ID = 4242
INSTALLATION = 777
SHA = "d" * 40
NOW = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    ).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def github(key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = start_fake_github()
    fake.register_app(APP_ID, key.public_key(), {INSTALLATION: "octo/hello"})
    yield fake
    fake.close()


def _segment(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ── pure ──────────────────────────────────────────────────────────────────────────────────


def test_the_jwt_is_rs256_signed_by_the_app_with_githubs_claims(key: rsa.RSAPrivateKey) -> None:
    jwt = app_jwt(APP_ID, key, NOW)
    head, claims, signature = jwt.split(".")
    assert "=" not in jwt  # base64url without padding
    assert json.loads(_segment(head)) == {"alg": "RS256", "typ": "JWT"}
    issued = int(NOW.timestamp())
    assert json.loads(_segment(claims)) == {
        "iat": issued - 60,
        "exp": issued + 9 * 60,
        "iss": str(APP_ID),
    }
    key.public_key().verify(
        _segment(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_refresh_is_needed_within_the_margin_of_expiry() -> None:
    assert timedelta(minutes=5) == REFRESH_MARGIN
    assert needs_refresh(NOW + timedelta(minutes=2), NOW)
    assert needs_refresh(NOW + REFRESH_MARGIN, NOW)  # exactly at the margin: renewed
    assert needs_refresh(NOW - timedelta(seconds=1), NOW)  # expired
    assert not needs_refresh(NOW + REFRESH_MARGIN + timedelta(seconds=1), NOW)
    assert not needs_refresh(NOW + timedelta(hours=1), NOW)
    assert not needs_refresh(NOW + timedelta(minutes=2), NOW, margin=timedelta(minutes=1))


def test_private_keys_are_checked_with_clear_errors(key: rsa.RSAPrivateKey) -> None:
    assert load_private_key(pem(key)).key_size == 2048
    cases = {
        "": "is empty",
        "not a key": "is not PEM",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n": "cannot be read",
        pem(key, b"pw"): "is encrypted",
        pem(ec.generate_private_key(ec.SECP256R1())): "must be an RSA key",
    }
    for text, expected in cases.items():
        with pytest.raises(InvalidInput, match=expected):
            load_private_key(text)


def test_ids_are_positive_whole_numbers() -> None:
    assert check_id(12, "GitHub App id") == 12
    assert check_id(" 12 ", "GitHub App id") == 12
    for bad in ("abc", "12a", -1, 0, True, 1.5, "", 2**63):
        with pytest.raises(InvalidInput, match="GitHub App id must be a positive whole number"):
            check_id(bad, "GitHub App id")


def test_access_token_answers_are_parsed() -> None:
    token = parse_access_token({"token": "ghs_x", "expires_at": "2026-11-30T11:00:00Z"})
    assert token.expires_at == NOW + timedelta(hours=1)
    assert "ghs_x" not in repr(token)
    for bad in ({}, {"token": "ghs_x"}, {"token": "ghs_x", "expires_at": "soon"}, []):
        with pytest.raises(GitHubRefused):
            parse_access_token(bad)
    assert github_message(401, b'{"message": "Bad credentials"}') == "HTTP 401: Bad credentials"
    assert github_message(502, b"<html>") == "HTTP 502"


def test_credentials_never_show_the_key(key: rsa.RSAPrivateKey) -> None:
    text = pem(key)
    assert text not in repr(AppCredentials(APP_ID, text))
    assert "ghp_x" not in repr(StaticToken("ghp_x"))


# ── against the fake ──────────────────────────────────────────────────────────────────────


def test_a_token_is_reused_until_the_margin_then_renewed(
    github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    app = AppCredentials(APP_ID, pem(key))
    assert github.app is not None

    async def twice() -> list[str]:
        tokens = InstallationTokens(github.url)
        return [await tokens.token(app, INSTALLATION), await tokens.token(app, INSTALLATION)]

    first = asyncio.run(twice())  # one hour to live: reused
    assert first[0] == first[1] and first[0].startswith("ghs_")
    assert len(github.token_requests()) == 1
    [request] = github.token_requests()
    assert request.path == f"/app/installations/{INSTALLATION}/access_tokens"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["authorization"].startswith("Bearer ey")

    github.app.token_seconds = 120  # inside the 5-minute margin: every use renews
    second = asyncio.run(twice())
    assert second[0] != second[1]
    assert len(github.token_requests()) == 3


def test_the_clock_decides_the_renewal(github: FakeGitHub, key: rsa.RSAPrivateKey) -> None:
    """Tokens issued for 6 minutes: reused at once, renewed 90 s later (4.5 minutes left)."""
    app = AppCredentials(APP_ID, pem(key))
    assert github.app is not None
    github.app.token_seconds = 360
    now = [datetime.now(UTC)]

    async def run() -> list[str]:
        tokens = InstallationTokens(github.url, clock=lambda: now[0])
        first = await tokens.token(app, INSTALLATION)
        second = await tokens.token(app, INSTALLATION)
        now[0] += timedelta(seconds=90)  # the JWT's iat follows the clock too (GitHub allows
        return [first, second, await tokens.token(app, INSTALLATION)]  # a little drift)

    first, second, third = asyncio.run(run())
    assert first == second != third
    assert len(github.token_requests()) == 2


def test_concurrent_callers_share_one_request(github: FakeGitHub, key: rsa.RSAPrivateKey) -> None:
    app = AppCredentials(APP_ID, pem(key))

    async def many() -> list[str]:
        tokens = InstallationTokens(github.url)
        return await asyncio.gather(*(tokens.token(app, INSTALLATION) for _ in range(10)))

    assert len(set(asyncio.run(many()))) == 1
    assert len(github.token_requests()) == 1


def test_the_installation_is_asked_of_github_once(
    github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    app = AppCredentials(APP_ID, pem(key))

    async def run() -> tuple[int, int]:
        tokens = InstallationTokens(github.url)
        return (
            await tokens.installation_for(app, "Octo/Hello"),
            await tokens.installation_for(app, "octo/hello"),
        )

    assert asyncio.run(run()) == (INSTALLATION, INSTALLATION)
    lookups = [r for r in github.requests if r.path.endswith("/installation")]
    assert [r.path for r in lookups] == ["/repos/Octo/Hello/installation"]

    async def missing() -> int:
        return await InstallationTokens(github.url).installation_for(app, "octo/other")

    with pytest.raises(
        GitHubRefused,
        match=r"no installation on octo/other \(is the App installed.*HTTP 404: Not Found",
    ):
        asyncio.run(missing())


def test_a_status_and_a_comment_carry_the_installation_token(
    github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    app = AppCredentials(APP_ID, pem(key))

    async def run() -> tuple[str | None, tuple[int | None, str | None]]:
        auth = InstallationAuth(InstallationTokens(github.url), app, None, "octo/hello")
        status = await StatusReporter(github.url, timeout=5).report(
            "octo/hello", SHA, CommitState.SUCCESS, auth=auth, target_url=None, description="ok"
        )
        comment = await CommentWriter(github.url, timeout=5).upsert(
            "octo/hello", 3, None, "body", auth=auth
        )
        return status, comment

    status, (comment_id, refused) = asyncio.run(run())
    assert status is None and refused is None and comment_id is not None
    [token] = github.issued_tokens()
    [sent_status] = github.statuses()
    [sent_comment] = github.comments()
    assert sent_status.headers["authorization"] == f"Bearer {token}"
    assert sent_comment.headers["authorization"] == f"Bearer {token}"


def test_a_revoked_token_is_renewed_once(github: FakeGitHub, key: rsa.RSAPrivateKey) -> None:
    app = AppCredentials(APP_ID, pem(key))

    async def run() -> list[str | None]:
        tokens = InstallationTokens(github.url)
        auth = InstallationAuth(tokens, app, INSTALLATION, None)
        reporter = StatusReporter(github.url, timeout=5)

        async def report() -> str | None:
            return await reporter.report(
                "octo/hello", SHA, CommitState.PENDING, auth=auth, target_url=None, description="x"
            )

        first = await report()
        github.revoke(await tokens.token(app, INSTALLATION))
        return [first, await report()]

    assert asyncio.run(run()) == [None, None]
    revoked, fresh = github.issued_tokens()
    assert [r.headers["authorization"] for r in github.statuses()] == [
        f"Bearer {revoked}",
        f"Bearer {revoked}",  # refused with 401 Bad credentials
        f"Bearer {fresh}",
    ]
    assert len(github.token_requests()) == 2


def test_a_token_refused_again_is_not_retried_forever(
    github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    """GitHub refuses even a fresh token (e.g. the App lost the permission): one retry only."""
    github.answer_status = 201
    app = AppCredentials(APP_ID, pem(key))
    assert github.app is not None
    github.app.token_seconds = -1  # every token GitHub issues is already expired

    async def run() -> str | None:
        auth = InstallationAuth(InstallationTokens(github.url), app, INSTALLATION, None)
        return await StatusReporter(github.url, timeout=5).report(
            "octo/hello", SHA, CommitState.PENDING, auth=auth, target_url=None, description="x"
        )

    reason = asyncio.run(run())
    assert reason is not None and "HTTP 401: Bad credentials" in reason
    assert len(github.statuses()) == 2
    assert len(github.token_requests()) == 2


def test_a_wrong_key_is_refused_with_githubs_words(github: FakeGitHub) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = AppCredentials(APP_ID, pem(other))

    async def run() -> str | None:
        auth = InstallationAuth(InstallationTokens(github.url), app, INSTALLATION, None)
        return await StatusReporter(github.url, timeout=5).report(
            "octo/hello", SHA, CommitState.PENDING, auth=auth, target_url=None, description="x"
        )

    reason = asyncio.run(run())
    assert reason == (
        f"GitHub App {APP_ID} installation {INSTALLATION}: GitHub refused an access token: "
        f"HTTP 401: {BAD_JWT}"
    )
    assert github.statuses() == []  # nothing was sent without a token
    assert pem(other) not in reason


def test_a_token_is_never_shared_with_another_key_of_the_same_app(
    github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    """Naming the App's id with a wrong (or someone else's) key gets none of the right key's
    cached tokens or installations: GitHub is asked, and refuses."""
    right = AppCredentials(APP_ID, pem(key))
    wrong = AppCredentials(
        APP_ID, pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )

    async def run() -> str:
        tokens = InstallationTokens(github.url)
        await tokens.token(right, INSTALLATION)
        await tokens.installation_for(right, "octo/hello")
        with pytest.raises(GitHubRefused, match="no installation on octo/hello"):
            await tokens.installation_for(wrong, "octo/hello")
        with pytest.raises(GitHubRefused, match=BAD_JWT):
            await tokens.token(wrong, INSTALLATION)
        return await tokens.token(right, INSTALLATION)

    assert asyncio.run(run()) == github.issued_tokens()[0]
    assert len(github.token_requests()) == 2
