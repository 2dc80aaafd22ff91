"""Host normalisation and route resolution, with properties checked by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phemeral.models import DeploymentStatus
from phemeral.router.host import normalise_host
from phemeral.router.table import (
    PLATFORM,
    DeploymentTarget,
    NoRoute,
    RouteTable,
)

from .conftest import BASE, snapshot

TABLE = RouteTable(
    snapshot(
        {"d1a2b3": DeploymentStatus.SUCCESSFUL, "old": DeploymentStatus.FAILED},
        {"shop-production": "d1a2b3", "shop-staging": None},
    )
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"APP.Example.COM:8080", "app.example.com"),
        (b"app.example.com.", "app.example.com"),
        (b"app.example.com.:80", "app.example.com"),
        (b"[::1]:8000", "[::1]"),
        (b"[0:0::1]", "[::1]"),
        (b"127.0.0.1:8000", "127.0.0.1"),
        (b"localhost", "localhost"),
        (b"", None),
        (b"a..b", None),
        (b".a.b", None),
        (b"a.b..", None),
        (b"user@a.b", None),
        (b"a b", None),
        (b"a_b.c", None),
        (b"a.b:", None),
        (b"a.b:0", None),
        (b"a.b:65536", None),
        (b"a.b:+80", None),
        (b"a:1:2", None),
        ("caf\u00e9.example".encode(), None),
        (b"[::1", None),
        (b"[zz::1]", None),
        (b"[::1]x", None),
        (b"a," + b"b", None),
        (b"x" * 64 + b".com", None),
    ],
)
def test_normalise_host(raw: bytes, expected: str | None) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"phemeral.localhost", PLATFORM),
        (b"PHEMERAL.localhost.:8000", PLATFORM),
        (b"localhost:8000", PLATFORM),
        (b"10.0.0.7", PLATFORM),
        (b"[::1]:8000", PLATFORM),
        (
            b"d1a2b3.phemeral.localhost",
            DeploymentTarget("d1a2b3", "deployment", DeploymentStatus.SUCCESSFUL),
        ),
        (
            b"shop-production.phemeral.localhost:8000",
            DeploymentTarget("d1a2b3", "environment", DeploymentStatus.SUCCESSFUL),
        ),
        (b"old.phemeral.localhost", DeploymentTarget("old", "deployment", DeploymentStatus.FAILED)),
        (b"shop-staging.phemeral.localhost", NoRoute("no-current-deployment")),
        (b"gone.phemeral.localhost", NoRoute("unknown-host")),
        (b"x.d1a2b3.phemeral.localhost", NoRoute("unknown-host")),
        (b"evilphemeral.localhost", NoRoute("unknown-host")),
        (b"d1a2b3phemeral.localhost", NoRoute("unknown-host")),
        (b"phemeral.localhost.evil.com", NoRoute("unknown-host")),
        (b"other.localhost", NoRoute("unknown-host")),
        (b"d1a2b3.phemeral.localhost@evil", None),
    ],
)
def test_resolve(raw: bytes, expected: object) -> None:
    assert TABLE.resolve_raw(raw) == expected
    assert TABLE.resolve_raw(raw) == expected  # second lookup comes from the cache


def test_no_host_is_not_found_never_a_default_app() -> None:
    assert TABLE.resolve(None) == NoRoute("no-host")


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_noise = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-._:@[] é\t", max_size=40)


@given(st.one_of(_noise, st.builds(lambda a, b: f"{a}.{b}", _noise, st.just(BASE))))
def test_only_known_single_labels_reach_a_deployment(host: str) -> None:
    route = TABLE.resolve_raw(host.encode())
    if isinstance(route, DeploymentTarget):
        name = normalise_host(host.encode())
        assert name is not None
        label, _, rest = name.partition(".")
        assert rest == BASE
        assert label in ("d1a2b3", "shop-production", "old")


@given(_label, st.sampled_from(["", ".", ":8000", ".:1"]), st.booleans())
def test_case_port_and_trailing_dot_do_not_change_the_route(
    label: str, tail: str, upper: bool
) -> None:
    host = f"{label}.{BASE}"
    variant = (host.upper() if upper else host) + tail
    assert TABLE.resolve_raw(variant.encode()) == TABLE.resolve(host)


@given(_label, _label)
def test_suffix_confusion_is_impossible(prefix: str, label: str) -> None:
    # "{prefix}{base}" without the dot, or a deeper name, never reaches a deployment.
    assert not isinstance(TABLE.resolve_raw(f"{prefix}{BASE}".encode()), DeploymentTarget)
    deeper = f"{prefix}.{label}.{BASE}".encode()
    assert not isinstance(TABLE.resolve_raw(deeper), DeploymentTarget)
