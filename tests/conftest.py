"""Fixtures every suite may use (`platformkit` has the plain helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platformkit import Platform


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def platform_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Platform]]:
    """Start real `phemeral serve` processes (``data_dir`` defaults to a fresh temp dir); all
    are stopped at the end, and a failed test prints their logs."""
    started: list[Platform] = []

    def start(data_dir: Path | None = None, **kwargs: Any) -> Platform:
        platform = Platform(data_dir or tmp_path_factory.mktemp("platform") / "data", **kwargs)
        started.append(platform)
        return platform.start()

    yield start
    failed = getattr(request.node, "report_call", None)
    for platform in started:
        platform.stop()
        if failed is not None and failed.failed:
            print(platform.tail())
