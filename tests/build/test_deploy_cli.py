"""`phemeral deploy` against a real `phemeral serve`: live log, status, exit code, stored log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from buildkit import FIXTURES
from platformkit import Platform, wait_done

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("serve") / "data")
    try:
        yield platform.start()
    finally:
        platform.stop()


def _cli(server: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli(*args)


def test_deploy_streams_log_and_succeeds(server: Platform) -> None:
    result = _cli(server, "deploy", str(FIXTURES / "uv_fastapi"), "--project", "cli-uv")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for stage in ("source", "detect", "python", "install", "verify", "release"):
        assert f" {stage} " in out
    assert "status  successful" in out
    assert "url     http://" in out
    deployment_id = out.split("id      ")[1].split()[0]
    logs = _cli(server, "logs", deployment_id, "--build", "--json")
    assert logs.returncode == 0, logs.stderr
    lines = json.loads(logs.stdout)["lines"]
    stages = {line["stage"] for line in lines}
    assert {"source", "detect", "python", "install", "verify", "release"} <= stages
    stamps = [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")) for line in lines]
    assert all(stamp.tzinfo is not None for stamp in stamps)
    assert stamps == sorted(stamps)


def test_deploy_json_and_failed_exit_status(server: Platform, tmp_path: Path) -> None:
    project = tmp_path / "broken-app"
    project.mkdir()
    (project / "requirements.txt").write_text("fastapi\nuvicorn\n")
    (project / "main.py").write_text(
        "import no_such_module_here\nfrom fastapi import FastAPI\napp = FastAPI()\n"
    )
    result = _cli(server, "deploy", str(project), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "failed"
    assert body["project"] == "broken-app"
    assert body["environment"] == "production"
    assert "no_such_module_here" in (body.get("failure_reason") or "")


def test_deploy_of_git_checkout_ships_uncommitted_changes(server: Platform, tmp_path: Path) -> None:
    repo = tmp_path / "gitapp"
    shutil.copytree(FIXTURES / "pip_flask_factory", repo)
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / ".gitignore").write_text("local.env\n")
    (repo / "local.env").write_text("SECRET=1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    init = repo / "shop" / "__init__.py"
    init.write_text(init.read_text().replace('"shop"', '"shop v2"'))
    result = _cli(server, "deploy", str(repo), "--no-wait", "--json")
    assert result.returncode == 0, result.stderr
    deployment_id = json.loads(result.stdout)["id"]
    with server.client() as api:
        status = wait_done(api, deployment_id, timeout=300)
    assert status["status"] == "successful", status
    releases = list((server.data_dir / "apps").glob(f"*/releases/{deployment_id}/src"))
    assert len(releases) == 1
    src = releases[0]
    assert "shop v2" in (src / "shop" / "__init__.py").read_text()  # uncommitted change shipped
    assert not (src / "local.env").exists()  # ignored file left out


def test_deploy_with_project_root_dir_uploads_only_what_the_build_needs(
    server: Platform, tmp_path: Path
) -> None:
    mono = tmp_path / "mono"
    shutil.copytree(FIXTURES / "pip_flask_factory", mono / "services" / "shop")
    (mono / "frontend" / "dist").mkdir(parents=True)
    (mono / "frontend" / "dist" / "bundle.bin").write_bytes(os.urandom(8 << 20))
    (mono / "docs").mkdir()
    (mono / "docs" / "manual.pdf").write_bytes(os.urandom(2 << 20))
    (mono / ".python-version").write_text("3.11\n")  # read from above the root dir
    made = _cli(server, "projects", "create", "mono-shop", "--root-dir", "services/shop")
    assert made.returncode == 0, made.stdout + made.stderr
    result = _cli(server, "deploy", str(mono), "--project", "mono-shop")
    assert result.returncode == 0, result.stdout + result.stderr
    packed = next(line for line in result.stderr.splitlines() if line.startswith("packed"))
    assert "root dir services/shop" in packed
    compressed_kib = int(packed.rsplit("(", 1)[1].split()[0])
    assert compressed_kib < 100, packed  # not the 10 MiB of frontend and docs
    deployment_id = result.stdout.split("id      ")[1].split()[0]
    src = next((server.data_dir / "apps").glob(f"*/releases/{deployment_id}/src"))
    assert (src / "services" / "shop" / "requirements.txt").is_file()
    assert (src / ".python-version").is_file()
    assert not (src / "frontend").exists() and not (src / "docs").exists()
