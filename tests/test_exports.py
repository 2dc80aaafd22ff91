"""Every package of `phemeral` declares what it exports (``__all__``), and the names exist."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import phemeral


def packages() -> list[str]:
    names = ["phemeral"]
    for info in pkgutil.walk_packages(phemeral.__path__, "phemeral."):
        if info.ispkg and ".migrations" not in info.name:
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", packages())
def test_package_declares_its_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)  # what a star import really gives
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(exported)


def test_the_main_surfaces() -> None:
    assert importlib.import_module("phemeral.api").__all__ == ["API_PREFIX", "create_app"]
    assert "serve_router" in importlib.import_module("phemeral.router").__all__
    assert "deploy" in importlib.import_module("phemeral.deploys").__all__
    assert "detect" in importlib.import_module("phemeral.detect").__all__
