"""Every fixture project under tests/fixtures/detect/ against its expected detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phemeral.detect import detect
from phemeral.errors import DetectionError
from phemeral.models import ProjectOverrides

FIXTURES = Path(__file__).parent.parent / "fixtures" / "detect"
TABLE = json.loads((Path(__file__).parent / "expected.json").read_text())
AVAILABLE = ("3.10", "3.11", "3.12", "3.13")
ISSUE_KEYS = (
    "root_dir",
    "python_version",
    "python_version_source",
    "package_manager",
    "framework",
    "entrypoint",
    "start_command",
)


def test_every_fixture_has_an_expectation() -> None:
    dirs = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert dirs == set(TABLE)
    assert len(dirs) >= 40


@pytest.mark.parametrize("scenario", sorted(TABLE))
def test_fixture(scenario: str) -> None:
    entry = TABLE[scenario]
    expected = entry["expected"]
    kwargs = {
        "overrides": ProjectOverrides(**entry.get("overrides", {})),
        "available_versions": entry.get("available_versions", AVAILABLE),
        "default_version": "3.12",
    }
    if "error" in expected:
        with pytest.raises(DetectionError) as caught:
            detect(FIXTURES / scenario, **kwargs)
        for part in expected["error"]:
            assert part in caught.value.message, caught.value.message
        return
    result = detect(FIXTURES / scenario, **kwargs).to_json()
    assert {k: result[k] for k in ISSUE_KEYS} == {k: expected[k] for k in ISSUE_KEYS}
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    for part in expected["warnings"]:
        assert any(part in w for w in warnings), (part, warnings)
    assert len(warnings) == len(expected["warnings"]), warnings
    for key in ("missing_server", "app_dir", "django_settings_module", "workspace_root"):
        if key in expected:
            assert result[key] == expected[key], (key, result[key])
    json.dumps(result)  # the JSON form is serialisable as is
