"""The ACME client (RFC 8555) over certbot's `acme` package: one account, HTTP-01 orders.

Blocking (the `acme` package uses `requests`): the certificate manager runs it in a thread.
`AcmeIssuer.issue(host, key_pem)` places an order for one host, publishes each HTTP-01 answer
through ``answer(host, token, key_authorization | None)`` (the router serves it on its plain
listener), answers the challenge, waits for validation, finalises with a CSR for ``key_pem`` and
returns the PEM chain. The account is registered on first use (or found again by its key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWKRSA

log = logging.getLogger("phemeral.tls")

ORDER_TIMEOUT = timedelta(seconds=90)
Answer = Callable[[str, str, str | None], None]


class IssueFailed(Exception):
    """An order did not produce a certificate; ``retry_after`` when the CA said how long."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def new_account_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class AcmeIssuer:
    directory_url: str
    email: str | None
    account_key_pem: bytes
    ca_bundle: Path | None = None
    timeout: int = 30

    def __post_init__(self) -> None:
        key = serialization.load_pem_private_key(self.account_key_pem, password=None)
        self._key = JWKRSA(key=cast(rsa.RSAPrivateKey, key))
        self._client: client.ClientV2 | None = None

    def issue(self, host: str, key_pem: bytes, answer: Answer) -> bytes:
        """A PEM chain for ``host`` signed over ``key_pem``; raises `IssueFailed`."""
        try:
            return self._issue(host, key_pem, answer)
        except IssueFailed:
            raise
        except errors.ValidationError as exc:
            raise IssueFailed(_validation_message(exc)) from exc
        except errors.TimeoutError as exc:
            raise IssueFailed("the CA did not finish the order in time") from exc
        except messages.Error as exc:
            if exc.code in ("accountDoesNotExist", "unauthorized"):
                self._client = None  # e.g. the CA forgot the account: register again
            raise IssueFailed(
                f"the CA refused: {exc.detail or exc.code}", _retry_after(exc)
            ) from exc
        except requests.RequestException as exc:
            self._client = None
            raise IssueFailed(
                f"cannot reach the CA at {self.directory_url}: {_network_reason(exc)}"
            ) from exc
        except errors.Error as exc:
            self._client = None
            raise IssueFailed(f"ACME error: {exc}") from exc

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        verify: Any = str(self.ca_bundle) if self.ca_bundle is not None else True
        net = client.ClientNetwork(
            self._key, user_agent="phemeral", verify_ssl=verify, timeout=self.timeout
        )
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as exc:  # this key already has an account: use it
            net.account = messages.RegistrationResource(
                uri=exc.location, body=messages.Registration()
            )
        self._client = acme
        return acme

    def _issue(self, host: str, key_pem: bytes, answer: Answer) -> bytes:
        acme = self._connect()
        csr = crypto_util.make_csr(key_pem, [host])
        order = acme.new_order(csr)
        published: list[tuple[str, str]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reuses a recent validation
                name = authz.body.identifier.value
                if name != host:
                    raise IssueFailed(f"the CA asked to validate {name!r}, not {host!r}")
                http01 = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                    None,
                )
                if http01 is None:
                    raise IssueFailed("the CA offered no HTTP-01 challenge")
                response, validation = http01.response_and_validation(self._key)
                token = http01.chall.encode("token")
                answer(host, token, validation)
                published.append((host, token))
                acme.answer_challenge(http01, response)
            deadline = datetime.now() + ORDER_TIMEOUT
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for name, token in published:
                answer(name, token, None)
        if not order.fullchain_pem:
            raise IssueFailed("the CA finalised the order without a certificate")
        return order.fullchain_pem.encode()


def _validation_message(exc: errors.ValidationError) -> str:
    details = []
    for authz in exc.failed_authzrs:
        for chall in authz.body.challenges:
            if chall.error is not None:
                details.append(
                    f"{authz.body.identifier.value}: {chall.error.detail or chall.error}"
                )
    reason = "; ".join(details) or "no details"
    return f"the CA could not validate the domain over HTTP-01 ({reason})"


def _retry_after(exc: messages.Error) -> timedelta | None:
    if exc.code == "rateLimited":
        return timedelta(hours=1)
    return None


def _network_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error ({_short(exc)})"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return _short(exc)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "…"
