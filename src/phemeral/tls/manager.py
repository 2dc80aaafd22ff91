"""The certificate manager: obtains and renews certificates for attached custom domains.

One task on the control plane's loop. Each round it reads which domains are due
(`phemeral.tls.renewal`), orders them one at a time through the ACME client (in a thread), and
stores the result: a new certificate (key encrypted with the platform's `SecretBox`), or the
failure with its message and the next try (backoff). After a change it republishes the routes
(the HTTPS redirect depends on a valid certificate) and the certificates (the router swaps them
for new handshakes only). It sleeps until the next domain is due, a certificate expires, or a
domain is added or a renewal asked for (`wake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from phemeral.deploys.domains import cert_facts, publish_certificates
from phemeral.deploys.plane import ControlPlane, TlsListener, now
from phemeral.deploys.routing import publish
from phemeral.store.schema import AcmeAccount, CustomDomain
from phemeral.tls import renewal
from phemeral.tls.acme import AcmeIssuer, IssueFailed, new_account_key_pem
from phemeral.tls.pem import certificate_from_files, leaf, names_of, new_private_key_pem, not_after

log = logging.getLogger("phemeral.tls")

MAX_SLEEP = 3600.0
IssuerFactory = Callable[[ControlPlane], AcmeIssuer]


def acme_issuer(cp: ControlPlane) -> AcmeIssuer:
    """The platform's ACME account at the configured directory (created once, key encrypted)."""
    settings = cp.settings
    with cp.store.write() as s:
        account = s.get(AcmeAccount, settings.acme_directory)
        if account is None:
            key = new_account_key_pem()
            account = AcmeAccount(
                directory=settings.acme_directory,
                key=cp.box.encrypt(key.decode()),
                email=settings.acme_email,
                created_at=now(),
            )
            s.add(account)
        else:
            key = cp.box.decrypt(account.key).encode()
    return AcmeIssuer(
        directory_url=settings.acme_directory,
        email=settings.acme_email,
        account_key_pem=key,
        ca_bundle=settings.acme_ca_bundle,
    )


@contextlib.asynccontextmanager
async def https_for(cp: ControlPlane, listener: TlsListener) -> AsyncIterator[None]:
    """HTTPS on a running control plane, when ``--https-port`` is set: the operator's wildcard
    (``--tls-cert``) read and known to the host policies, ``listener`` (the router, or whatever
    carries certificates and HTTP-01 answers to it) given every servable certificate, and the
    certificate manager running until the block ends. Without an HTTPS port: nothing."""
    settings = cp.settings
    if settings.https_port is None:
        yield
        return
    if settings.tls_cert is not None and settings.tls_key is not None:
        cp.wildcard = certificate_from_files(settings.tls_cert, settings.tls_key)
    cp.tls_listeners.append(listener)
    await asyncio.to_thread(publish, cp)  # host policies know the wildcard now
    await asyncio.to_thread(publish_certificates, cp)
    manager = CertificateManager(cp)
    manager.start()
    try:
        yield
    finally:
        await manager.close()
        cp.tls_listeners.remove(listener)


class CertificateManager:
    def __init__(self, cp: ControlPlane, issuer_factory: IssuerFactory = acme_issuer) -> None:
        self.cp = cp
        self._issuer_factory = issuer_factory
        self._issuer: AcmeIssuer | None = None
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._served: frozenset[tuple[str, datetime]] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.cp.certificates_changed = self.wake
        self._task = self._loop.create_task(self._run())

    def wake(self) -> None:
        """Look again now (thread-safe: the API's use-cases call it from worker threads)."""
        self._loop.call_soon_threadsafe(self._wake.set)

    async def close(self) -> None:
        self.cp.certificates_changed = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a wake during it starts the next one at once
            sleep = MAX_SLEEP
            try:
                sleep = await self.round()
            except Exception:
                log.exception("certificate round failed")
                sleep = 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def round(self) -> float:
        """Order what is due; republish when what may be served changed. Seconds to sleep."""
        due, _ = await asyncio.to_thread(self._plan, now())
        for name in due:
            await self._order(name)
        _, wake_at = await asyncio.to_thread(self._plan, now())
        served = await asyncio.to_thread(self._servable, now())
        if served != self._served:
            self._served = served
            await asyncio.to_thread(publish, self.cp)
            await asyncio.to_thread(publish_certificates, self.cp)
        if wake_at is None:
            sleep = MAX_SLEEP
        else:
            sleep = min(max((wake_at - now()).total_seconds(), 0.5), MAX_SLEEP)
        return sleep

    def _plan(self, at: datetime) -> tuple[list[str], datetime | None]:
        """Domains due now, and when the next thing happens (a try, a renewal, an expiry)."""
        due: list[str] = []
        wake_at: datetime | None = None
        with self.cp.store.read() as s:
            for row in s.scalars(select(CustomDomain).order_by(CustomDomain.created_at)):
                facts = cert_facts(row)
                if renewal.is_due(facts, at):
                    due.append(row.name)
                    wake_at = at  # still due after this round (added meanwhile): look again
                    continue
                for when in (renewal.next_due(facts), facts.not_after):
                    if when is not None and when > at and (wake_at is None or when < wake_at):
                        wake_at = when
        return due, wake_at

    def _servable(self, at: datetime) -> frozenset[tuple[str, datetime]]:
        with self.cp.store.read() as s:
            rows = s.execute(
                select(CustomDomain.name, CustomDomain.cert_not_after).where(
                    CustomDomain.cert_not_after.is_not(None)
                )
            )
            return frozenset((name, when) for name, when in rows if when is not None and at < when)

    async def _order(self, name: str) -> None:
        log.info("ordering a certificate for %s", name)
        key_pem = new_private_key_pem()
        try:
            if self._issuer is None:
                self._issuer = await asyncio.to_thread(self._issuer_factory, self.cp)
            chain = await asyncio.to_thread(self._issuer.issue, name, key_pem, self._answer)
            expires = not_after(chain)
            if name not in names_of(leaf(chain)):
                raise IssueFailed(f"the CA's certificate does not name {name}")
        except IssueFailed as exc:
            log.warning("certificate for %s: %s", name, exc.message)
            await asyncio.to_thread(self._failed, name, exc.message, exc.retry_after)
            return
        except Exception as exc:  # a bug or an unexpected answer: recorded, retried later
            log.exception("certificate for %s failed", name)
            await asyncio.to_thread(self._failed, name, f"internal error: {exc}", None)
            return
        log.info("certificate for %s issued, valid until %s", name, expires.isoformat())
        await asyncio.to_thread(self._issued, name, chain, key_pem, expires)

    def _answer(self, host: str, token: str, key_authorization: str | None) -> None:
        """Publish an HTTP-01 answer to the router before the CA is told to look (from the
        issuer's thread, through the loop)."""

        async def apply() -> None:
            for listener in list(self.cp.tls_listeners):
                listener.set_challenge(host, token, key_authorization)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(timeout=10)

    def _failed(self, name: str, message: str, retry_after: timedelta | None) -> None:
        base = timedelta(seconds=self.cp.settings.acme_retry_seconds)
        with self.cp.store.write() as s:
            row = s.get(CustomDomain, name)
            if row is None:
                return
            row.cert_failures += 1
            row.cert_last_error = message
            row.cert_next_try_at = renewal.retry_at(row.cert_failures, now(), base, retry_after)
            warning = renewal.warning(cert_facts(row), now())
            if warning is not None:
                log.warning("%s: %s (last error: %s)", name, warning, message)

    def _issued(self, name: str, chain: bytes, key_pem: bytes, expires: datetime) -> None:
        with self.cp.store.write() as s:
            row = s.get(CustomDomain, name)
            if row is None:  # detached while the order ran: the certificate is dropped
                return
            row.cert_chain = chain.decode()
            row.cert_key = self.cp.box.encrypt(key_pem.decode())
            row.cert_not_after = expires
            row.cert_issued_at = now()
            row.cert_failures = 0
            row.cert_last_error = None
            row.cert_next_try_at = None
            row.cert_renew_now = False
        self._served = frozenset()  # force a republish this round
