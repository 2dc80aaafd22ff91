"""Fixtures for build tests: one data dir (and so one uv cache) per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from phemeral.settings import Settings, load_settings


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir per session, so the uv cache is shared between the build tests."""
    return tmp_path_factory.mktemp("phemeral-data")


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return load_settings({}, {"data_dir": data_dir, "build_timeout": 300})
