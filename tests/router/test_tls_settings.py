"""HTTPS settings are checked once, with messages naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from phemeral.errors import ConfigError
from phemeral.settings import load_settings
from phemeral.tls.pem import certificate_from_files, covers

from .certkit import new_ca


def test_https_options_are_checked(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path}
    assert load_settings({}, {**base, "https_port": 8443}).https_port == 8443
    for overrides, message in (
        ({"https_port": 8000}, "must differ"),
        ({"https_port": 70000}, "between 1 and 65535"),
        ({"tls_cert": tmp_path / "c.pem"}, "go together"),
        ({"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}, "needs --https-port"),
        ({"acme_directory": "ftp://x"}, "not an http"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings({}, {**base, **overrides})


def test_platform_urls_are_https_once_the_base_domain_has_a_certificate(tmp_path: Path) -> None:
    plain = load_settings({}, {"data_dir": tmp_path, "https_port": 8443})
    assert (
        plain.url_for_label("shop-production") == "http://shop-production.phemeral.localhost:8000"
    )
    ca = new_ca()
    cert = ca.issue("*.phemeral.localhost")
    (tmp_path / "c.pem").write_bytes(cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(cert.key_pem)
    tls = load_settings(
        {},
        {
            "data_dir": tmp_path,
            "https_port": 443,
            "tls_cert": tmp_path / "c.pem",
            "tls_key": tmp_path / "k.pem",
        },
    )
    assert tls.url_for_label("abc") == "https://abc.phemeral.localhost"
    assert tls.base_url == "https://phemeral.localhost"


def test_certificate_files_are_read_and_checked(tmp_path: Path) -> None:
    ca = new_ca()
    cert = ca.issue("*.example.test", "example.test")
    other = ca.issue("*.example.test")
    (tmp_path / "c.pem").write_bytes(cert.chain_pem)
    (tmp_path / "k.pem").write_bytes(cert.key_pem)
    (tmp_path / "other.pem").write_bytes(other.key_pem)
    loaded = certificate_from_files(tmp_path / "c.pem", tmp_path / "k.pem")
    assert loaded.names == ("*.example.test", "example.test")
    assert loaded.not_after == cert.not_after
    with pytest.raises(ConfigError, match="does not belong"):
        certificate_from_files(tmp_path / "c.pem", tmp_path / "other.pem")
    with pytest.raises(ConfigError, match="not a PEM"):
        certificate_from_files(tmp_path / "k.pem", tmp_path / "k.pem")
    assert covers(loaded.names, "a.example.test") and covers(loaded.names, "example.test")
    assert not covers(loaded.names, "a.b.example.test") and not covers(
        loaded.names, "xexample.test"
    )
