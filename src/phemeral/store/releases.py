"""`Release` ⇄ JSON for the database, so the runtime can be handed every release again after a
restart. The mapping is `phemeral.build.release`'s (the one `release.json` uses); the database
copy leaves the environment out: it lives encrypted in the deployment's snapshot."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from phemeral.build import release as release_file
from phemeral.models import Release


def release_to_json(release: Release) -> dict[str, Any]:
    return release_file.release_to_json(replace(release, env={}))


def release_from_json(data: dict[str, Any], env: dict[str, str]) -> Release:
    return replace(release_file.release_from_json(data), env=env)
