"""TLS in the router: certificates chosen by SNI, swapped whole without touching live connections.

`CertificateStore` is the router's only view of certificates. Whoever owns them (the control
plane's ACME client, the operator's ``--tls-cert``/``--tls-key`` wildcard) hands the complete set
to `CertificateStore.replace`; the store builds one `ssl.SSLContext` per certificate (reused while
the same PEM bytes come back) and swaps its name → context maps in one assignment. A handshake
picks its context in the SNI callback; connections already established keep the context they
were made with, so a renewal never drops them.

Names resolve exact first, then a one-label wildcard (``*.example.com`` covers ``a.example.com``,
not ``a.b.example.com`` nor ``example.com``). A ClientHello without SNI gets the first wildcard
(if any); an unknown name gets an ``unrecognized_name`` alert and the handshake ends at once.

`ChallengeResponses` holds the ACME HTTP-01 answers the plain-HTTP listener serves
(``/.well-known/acme-challenge/{token}`` for one host name).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterable

from phemeral.models import TlsCertificate

log = logging.getLogger(__name__)

ACME_CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"

# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are OpenSSL's defaults).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def new_server_context() -> ssl.SSLContext:
    """A server context with the router's protocol settings and no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.num_tickets = 1  # TLS 1.3 resumption: one ticket per handshake (OpenSSL's default: 2)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def load_context(certificate: TlsCertificate) -> ssl.SSLContext:
    """A server context serving ``certificate``; raises `ssl.SSLError` (e.g. key mismatch).

    OpenSSL reads certificates from files only: the PEM goes through an anonymous in-memory
    file (``memfd``), so the private key never touches a disk.
    """
    ctx = new_server_context()
    fd = os.memfd_create("phemeral-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, certificate.chain_pem.rstrip() + b"\n" + certificate.key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


class CertificateStore:
    """Certificates by host name, for the HTTPS listener's SNI callback."""

    def __init__(self) -> None:
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
        self._default: ssl.SSLContext | None = None
        self._loaded: dict[tuple[bytes, bytes], ssl.SSLContext] = {}
        self.context = new_server_context()  # what the listener is created with
        self.context.sni_callback = self._on_sni

    def replace(self, certificates: Iterable[TlsCertificate]) -> None:
        """Serve exactly ``certificates`` from the next handshake on.

        A certificate whose key does not match (or that OpenSSL refuses) is left out and
        logged; the others still apply.
        """
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        loaded: dict[tuple[bytes, bytes], ssl.SSLContext] = {}
        for cert in certificates:
            key = (cert.chain_pem, cert.key_pem)
            ctx = loaded.get(key) or self._loaded.get(key)
            if ctx is None:
                try:
                    ctx = load_context(cert)
                except (ssl.SSLError, OSError) as exc:
                    log.error("certificate for %s refused: %s", ", ".join(cert.names), exc)
                    continue
            loaded[key] = ctx
            for name in cert.names:
                name = name.lower().rstrip(".")
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], ctx)
                    default = default or ctx
                else:
                    exact.setdefault(name, ctx)
        self._exact, self._wildcard, self._default, self._loaded = exact, wildcard, default, loaded

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a ClientHello's SNI (None: no SNI sent)."""
        if server_name is None:
            return self._default
        name = server_name.lower().rstrip(".")
        ctx = self._exact.get(name)
        if ctx is not None:
            return ctx
        _, dot, parent = name.partition(".")
        return self._wildcard.get(parent) if dot else None

    def serves(self, host: str) -> bool:
        return self.context_for(host) is not None

    def _on_sni(
        self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        ctx = self.context_for(server_name)
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = ctx
        return None


class ChallengeResponses:
    """ACME HTTP-01 key authorizations by (host name, token), served over plain HTTP."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], bytes] = {}

    def __bool__(self) -> bool:
        return bool(self._answers)

    def set(self, host: str, token: str, key_authorization: str | None) -> None:
        """Answer ``token`` for ``host`` with ``key_authorization``; None stops answering."""
        if key_authorization is None:
            self._answers.pop((host, token), None)
        else:
            self._answers[(host, token)] = key_authorization.encode("ascii")

    def answer(self, host: str, target: bytes) -> bytes | None:
        """The body for a request target under the challenge prefix, None when unknown."""
        token = target[len(ACME_CHALLENGE_PREFIX) :].decode("ascii", "replace")
        return self._answers.get((host, token))
