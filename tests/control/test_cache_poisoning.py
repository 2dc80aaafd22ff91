"""The uid-reuse poisoning sequence: a build plants code in the package cache it can see, its
project is deleted, and neither that project's next build nor the next project imports it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .serverkit import Server, unique, upload, wait_done

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="app uids and overlays need root"),
]

# A project whose own build step (setup.py, run by the build backend) rewrites every copy of
# flask it can find in the package cache so that importing flask fails.
PLANTER = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
    'build-backend = "setuptools.build_meta"\n\n[project]\nname = "planter"\nversion = "1"\n'
    'dependencies = ["flask"]\n\n[tool.setuptools]\npy-modules = ["app"]\n',
    "setup.py": """
import os, stat
from setuptools import setup
planted = 0
for top in {os.environ.get("UV_CACHE_DIR", "/nonexistent"), os.path.expanduser("~")}:
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath.endswith(os.sep + "flask") and "__init__.py" in filenames:
            path = os.path.join(dirpath, "__init__.py")
            try:
                os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
                with open(path, "a") as out:
                    out.write("\\nraise SystemExit('POISONED by an earlier build')\\n")
                planted += 1
            except OSError as exc:
                print("could not plant", path, exc)
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "planted.txt"), "w") as out:
    out.write(str(planted))
setup()
""",
    "app.py": "from flask import Flask\n\napp = Flask(__name__)\n\n\n"
    '@app.get("/")\ndef root():\n    return "planter"\n',
}
VICTIM = {
    "requirements.txt": "flask\n",
    "app.py": "import flask\n\napp = flask.Flask(__name__)\n\n\n"
    '@app.get("/")\ndef root():\n    return "clean"\n',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("data-poison"), database_url=None).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def build_log(api: httpx.Client, deployment_id: str) -> str:
    lines = api.get(f"/deployments/{deployment_id}/logs/build", params={"limit": 1000}).json()
    return "\n".join(line["message"] for line in lines["lines"])


def test_planted_cache_code_reaches_no_later_build(api: httpx.Client, server: Server) -> None:
    tenant = unique("planter")
    api.post("/projects", json={"name": tenant, "package_manager": "pip"})
    planted = wait_done(api, str(upload(api, tenant, PLANTER)["id"]), timeout=300)
    assert planted["status"] == "successful", planted["failure_reason"]
    # the attack ran: the build saw flask in its cache and rewrote it
    release = server.data_dir / "apps" / tenant / "releases" / str(planted["id"])
    assert int((release / "src" / "planted.txt").read_text()) > 0
    old_uid = api.get(f"/projects/{tenant}").json()["uid"]

    # the same project's next build installs flask from its cache: still clean
    again = wait_done(api, str(upload(api, tenant, VICTIM)["id"]), timeout=300)
    assert again["status"] == "successful", again["failure_reason"]
    assert "POISONED" not in build_log(api, str(again["id"]))

    # the tenant goes away; its cache with it
    cache_dir = server.data_dir / "cache" / "projects" / str(old_uid)
    assert cache_dir.is_dir()
    assert api.delete(f"/projects/{tenant}").status_code == 200
    assert not cache_dir.exists()

    # the next project: a uid never used before, a clean flask
    victim = unique("victim")
    created = api.post("/projects", json={"name": victim}).json()
    assert created["uid"] > old_uid
    done = wait_done(api, str(upload(api, victim, VICTIM)["id"]), timeout=300)
    assert done["status"] == "successful", done["failure_reason"]
    assert "POISONED" not in build_log(api, str(done["id"]))
    response = httpx.get(server.url, headers={"Host": f"{done['id']}.phemeral.localhost"})
    assert response.text == "clean"

    # nothing the builds wrote is left on the host: overlays are gone
    overlays = server.data_dir / "cache" / "overlays"
    assert not overlays.exists() or not any(overlays.iterdir())
    _no_planted_flask(server.data_dir / "cache")


def _no_planted_flask(cache: Path) -> None:
    for path in cache.rglob("flask/__init__.py"):
        assert "POISONED" not in path.read_text(), path
