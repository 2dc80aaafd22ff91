"""The pure decisions of the install stage: poetry production sets, cache keys, failure texts."""

from __future__ import annotations

import pytest

from phemeral.build.install import cache_key, classify_failure, explain_miss
from phemeral.build.poetry import plan
from phemeral.errors import BuildError

PYPROJECT = """
[tool.poetry]
name = "x"
version = "0"
[tool.poetry.dependencies]
python = "^3.11"
flask = "^3"
extra-thing = {version = "*", optional = true}
[tool.poetry.group.dev.dependencies]
pytest = "*"
[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
"""


def _pkg(name: str, extra: str = "") -> str:
    files = f'files = [{{file = "{name}-1.0-py3-none-any.whl", hash = "sha256:{name[0] * 64}"}}]'
    return f'[[package]]\nname = "{name}"\nversion = "1.0"\noptional = false\n{files}\n{extra}\n'


def test_lock_21_groups_and_markers() -> None:
    lock = (
        _pkg("flask", 'groups = ["main"]')
        + _pkg("werkzeug", 'groups = ["main"]')
        + _pkg("pywin32", 'groups = ["main"]\nmarkers = "sys_platform == \'win32\'"')
        + _pkg("tomli", 'groups = ["main"]\nmarkers = "python_version < \'3.11\'"')
        + _pkg("pytest", 'groups = ["dev"]')
    )
    chosen = plan(lock, PYPROJECT, "3.12.1")
    assert [p.name for p in chosen.packages] == ["flask", "werkzeug"]
    assert chosen.install_root
    text = chosen.requirements_text()
    assert "flask==1.0 \\\n    --hash=sha256:" in text


def test_lock_1x_category() -> None:
    lock = (
        _pkg("flask", 'category = "main"')
        + _pkg("extra-thing", 'category = "main"').replace("optional = false", "optional = true")
        + _pkg("pytest", 'category = "dev"')
    )
    assert [p.name for p in plan(lock, PYPROJECT, "3.12.1").packages] == ["flask"]


def test_lock_20_walks_the_graph_from_main_dependencies() -> None:
    lock = (
        _pkg(
            "flask",
            '[package.dependencies]\nwerkzeug = ">=3"\n'
            'colorama = {version = "*", markers = "platform_system == \'Windows\'"}',
        )
        + _pkg("werkzeug")
        + _pkg("colorama")
        + _pkg("pytest", '[package.dependencies]\niniconfig = "*"')
        + _pkg("iniconfig")
    )
    assert [p.name for p in plan(lock, PYPROJECT, "3.12.1").packages] == ["flask", "werkzeug"]


def test_out_of_date_lock_and_unhashed_sources() -> None:
    with pytest.raises(BuildError, match="poetry lock"):
        plan(_pkg("werkzeug", 'groups = ["main"]'), PYPROJECT, "3.12.1")
    git = _pkg("flask", 'groups = ["main"]\n[package.source]\ntype = "git"\nurl = "https://x"')
    with pytest.raises(BuildError, match="git source"):
        plan(git, PYPROJECT, "3.12.1")


def test_package_mode_false_skips_root() -> None:
    pyproject = PYPROJECT.replace('version = "0"', 'version = "0"\npackage-mode = false')
    assert not plan(_pkg("flask", 'groups = ["main"]'), pyproject, "3.12.1").install_root


def test_cache_key_and_miss_reasons() -> None:
    a = cache_key("uv", {"uv.lock": b"1", "pyproject.toml": b"p"}, "3.12.1", "linux-x86_64", ())
    same = cache_key("uv", {"pyproject.toml": b"p", "uv.lock": b"1"}, "3.12.1", "linux-x86_64", ())
    assert a.key == same.key
    b = cache_key("uv", {"uv.lock": b"2", "pyproject.toml": b"p"}, "3.13.0", "linux-x86_64", ())
    assert explain_miss(b, a.parts) == "uv.lock changed, Python changed from 3.12.1 to 3.13.0"
    assert explain_miss(a, None).startswith("first build")


def test_failure_messages() -> None:
    stale = "error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided."
    assert "run `uv lock`" in classify_failure("uv sync failed", stale)
    nosol = "  × No solution found when resolving dependencies:\n  ╰─▶ Because nope was not found"
    assert classify_failure("x", nosol).startswith("the dependencies cannot be resolved")
    assert classify_failure("installing failed", "boom").startswith("installing failed:\nboom")
