"""The fast lockfile scanners agree with a full TOML parse on real lockfiles."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from phemeral.detect.lockscan import scan_poetry_lock, scan_uv_lock

REPO = Path(__file__).resolve().parents[2]
UV_LOCKS = sorted(
    [
        REPO / "uv.lock",
        *REPO.glob("examples/*/uv.lock"),
        *REPO.glob("tests/fixtures/detect/*/uv.lock"),
    ]
)
POETRY_LOCKS = sorted(
    [*REPO.glob("examples/*/poetry.lock"), *REPO.glob("tests/fixtures/detect/*/poetry.lock")]
)


def _edges(items: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    return [(item["name"], tuple(item.get("extra", ()))) for item in items]


@pytest.mark.parametrize("path", UV_LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_uv_lock_scan_matches_toml(path: Path) -> None:
    text = path.read_text()
    full, fast = tomllib.loads(text), scan_uv_lock(text)
    assert fast is not None
    assert fast.get("requires-python") == full.get("requires-python")
    assert len(fast["package"]) == len(full["package"])
    for slow_pkg, fast_pkg in zip(full["package"], fast["package"], strict=True):
        assert fast_pkg["name"] == slow_pkg["name"]
        for kind, where in fast_pkg.get("source", {}).items():
            assert slow_pkg["source"][kind] == where
        assert _edges(fast_pkg["dependencies"]) == _edges(slow_pkg.get("dependencies", []))
        slow_optional = slow_pkg.get("optional-dependencies", {})
        fast_optional = fast_pkg.get("optional-dependencies", {})
        assert {k: _edges(v) for k, v in fast_optional.items()} == {
            k: _edges(v) for k, v in slow_optional.items()
        }


@pytest.mark.parametrize("path", POETRY_LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_poetry_lock_scan_matches_toml(path: Path) -> None:
    text = path.read_text()
    full, fast = tomllib.loads(text), scan_poetry_lock(text)
    assert fast is not None
    assert fast["metadata"].get("python-versions") == full["metadata"].get("python-versions")
    for slow_pkg, fast_pkg in zip(full["package"], fast["package"], strict=True):
        assert fast_pkg["name"] == slow_pkg["name"]
        assert fast_pkg.get("groups") == slow_pkg.get("groups")
        assert fast_pkg.get("category") == slow_pkg.get("category")


def test_unusual_layout_falls_back() -> None:
    assert scan_uv_lock('[[package]]\nname = "x"\n') is None  # no version header
    assert scan_poetry_lock('[[package]]\nname = "x"\n') is None  # no [metadata]
