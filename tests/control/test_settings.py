"""Configuration is read once, from ``PHEMERAL_*`` and command-line overrides, and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from phemeral.errors import ConfigError
from phemeral.settings import load_settings


def test_the_log_level_is_a_setting(tmp_path: Path) -> None:
    env = {"PHEMERAL_DATA_DIR": str(tmp_path), "PHEMERAL_LOG_LEVEL": "WARNING"}
    assert load_settings(environ=env).log_level == "warning"
    assert load_settings(environ={"PHEMERAL_DATA_DIR": str(tmp_path)}).log_level == "info"
    assert load_settings(environ=env, overrides={"log_level": "debug"}).log_level == "debug"
    with pytest.raises(ConfigError, match="log level 'loud'"):
        load_settings(environ={**env, "PHEMERAL_LOG_LEVEL": "loud"})


def test_the_paged_tier_settings_are_read_and_checked(tmp_path: Path) -> None:
    env = {"PHEMERAL_DATA_DIR": str(tmp_path)}
    default = load_settings(environ=env)
    assert (default.hot_set_mb, default.hot_set_budget_mb) == (12, None)
    chosen = load_settings(
        environ={**env, "PHEMERAL_HOT_SET_MB": "0", "PHEMERAL_HOT_SET_BUDGET_MB": "2048"}
    )
    assert (chosen.hot_set_mb, chosen.hot_set_budget_mb) == (0, 2048)
    with pytest.raises(ConfigError, match="hot set budget must be 0"):
        load_settings(environ={**env, "PHEMERAL_HOT_SET_BUDGET_MB": "-1"})
    with pytest.raises(ConfigError, match="hot set must be 0"):
        load_settings(environ={**env, "PHEMERAL_HOT_SET_MB": "-5"})
