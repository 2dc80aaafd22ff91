"""Reading certificates (pure): names, expiry, and the files an operator supplies."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from phemeral.errors import ConfigError
from phemeral.models import TlsCertificate


def leaf(chain_pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM chain; ValueError when there is none."""
    return x509.load_pem_x509_certificate(chain_pem)


def names_of(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate covers (its SANs; the CN when it has none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = ext.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
    return tuple(n.lower() for n in names)


def not_after(chain_pem: bytes) -> datetime:
    return leaf(chain_pem).not_valid_after_utc


def certificate_from_files(cert_path: Path, key_path: Path) -> TlsCertificate:
    """The operator's certificate (``--tls-cert``/``--tls-key``), checked: names, key match."""
    try:
        chain = cert_path.read_bytes()
        key_pem = key_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS certificate or key: {exc}") from exc
    try:
        cert = leaf(chain)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{cert_path} or {key_path} is not a PEM certificate / key: {exc}"
        ) from exc
    if not _same_public_key(cert, key):
        raise ConfigError(f"the key in {key_path} does not belong to the certificate {cert_path}")
    names = names_of(cert)
    if not names:
        raise ConfigError(f"the certificate {cert_path} names no host")
    return TlsCertificate(
        names=names, chain_pem=chain, key_pem=key_pem, not_after=cert.not_valid_after_utc
    )


def _same_public_key(cert: x509.Certificate, key: object) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    ours = public().public_bytes(der, fmt)
    return bool(ours == cert.public_key().public_bytes(der, fmt))


def new_private_key_pem() -> bytes:
    """A fresh ECDSA P-256 key for a certificate (PKCS#8 PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def covers(names: tuple[str, ...], host: str) -> bool:
    """True when one of ``names`` (exact or one-label wildcard) covers ``host``."""
    host = host.lower()
    for name in names:
        if name == host:
            return True
        if name.startswith("*."):
            _, dot, parent = host.partition(".")
            if dot and parent == name[2:]:
                return True
    return False
