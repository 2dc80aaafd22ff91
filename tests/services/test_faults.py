"""Faults of the servers themselves get clear errors (in-process, real redis-server)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from phemeral.errors import ServiceFailure
from phemeral.services import manager as manager_module
from phemeral.services.manager import ServiceManager, ServiceRecord
from phemeral.services.spec import ServiceKind
from phemeral.settings import Settings

from .kit import stop_leftovers, traversable

pytestmark = pytest.mark.root


@pytest.fixture
def services() -> Iterator[ServiceManager]:
    root = Path(tempfile.mkdtemp(prefix="phemeral-services-faults-"))
    traversable(root / "data")
    try:
        yield ServiceManager(Settings(data_dir=root / "data", services_host="127.0.0.1"))
    finally:
        stop_leftovers(root / "data")
        shutil.rmtree(root, ignore_errors=True)


def redis_record(port: int) -> ServiceRecord:
    return ServiceRecord("r", ServiceKind.REDIS, "embedded", "r-000000", port, "pw", "admin")


def test_a_redis_whose_port_is_taken_fails_with_the_reason(services: ServiceManager) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ServiceFailure, match=f"port {port} is taken by another process"):
            services.redis(redis_record(port)).start()


def test_start_reports_what_failed_and_starts_the_rest(services: ServiceManager) -> None:
    port = manager_module.pick_port("127.0.0.1")
    ok = ServiceRecord("ok", ServiceKind.REDIS, "embedded", "ok-000000", port, "pw", "admin")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = redis_record(squatter.getsockname()[1])
        failures = services.start([taken, ok])
    assert len(failures) == 1 and "service r:" in failures[0] and "taken" in failures[0]
    assert services.redis(ok).alive()
    services.stop([ok])
    assert not services.redis(ok).alive()


def test_a_full_disk_refuses_new_services_and_backups(
    services: ServiceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage

    def nearly_full(path: object) -> object:
        usage = real(str(path))
        return type(usage)(usage.total, usage.total - 1024, 1024)

    monkeypatch.setattr(manager_module.shutil, "disk_usage", nearly_full)
    with pytest.raises(ServiceFailure, match="the disk is full"):
        services.provision(redis_record(0))
    with pytest.raises(ServiceFailure, match="the disk is full"):
        services.backup(redis_record(1), when=datetime.now(UTC))
