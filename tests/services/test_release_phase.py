"""The release phase against the platform's own PostgreSQL: a Django app declared in a Procfile
migrates in its release command, before the boot check, once per deployment; promoting an older
deployment (rollback) does not run it again."""

from __future__ import annotations

import httpx
import pytest

from .apps import DJANGO_PG
from .kit import Server, build_log, deploy, get, unique

pytestmark = [pytest.mark.slow, pytest.mark.root]

PROCFILE = "web: gunicorn mysite.wsgi\nrelease: python manage.py migrate --noinput\n"


def stages(api: httpx.Client, deployment_id: str) -> list[tuple[str, str]]:
    lines = api.get(f"/deployments/{deployment_id}/logs/build", params={"limit": 1000}).json()
    return [(line["stage"], line["message"]) for line in lines["lines"]]


def test_django_migrates_in_the_release_phase_before_it_serves(
    server: Server, api: httpx.Client
) -> None:
    project = unique("rel")
    api.post("/projects", json={"name": project})
    response = api.post("/services", json={"kind": "postgres", "project": project})
    assert response.status_code == 201, response.text
    app = {**DJANGO_PG, "Procfile": PROCFILE}

    first = deploy(api, project, app)
    assert first["start_command_source"] == "procfile"
    assert first["start_command"] == "gunicorn --bind 0.0.0.0:$PORT mysite.wsgi"
    log = stages(api, str(first["id"]))
    migrated = next(i for i, (_, m) in enumerate(log) if "Applying notes.0001_initial" in m)
    assert log[migrated][0] == "release"
    ran = next(i for i, (_, m) in enumerate(log) if m.startswith("running the release command"))
    booted = next(i for i, (s, _) in enumerate(log) if s == "boot")
    assert ran < migrated < booted  # migrated before the boot check
    assert "release command finished" in build_log(api, str(first["id"]))
    assert get(server, first["id"], "/add").json() == {"notes": 1}

    second = deploy(api, project, app)
    assert "No migrations to apply." in build_log(api, str(second["id"]))
    assert get(server, second["id"]).json() == {"notes": 1}

    # Rollback: promoting the first again does not run its release command again.
    before = len(stages(api, str(first["id"])))
    response = api.post(f"/deployments/{first['id']}/promote", json={})
    assert response.status_code == 200, response.text
    assert len(stages(api, str(first["id"]))) == before
    assert get(server, first["id"]).json() == {"notes": 1}
