"""Environment variables: what names and values are allowed, and what an app finally sees."""

from __future__ import annotations

import re
from collections.abc import Mapping

from phemeral.errors import InvalidInput

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
MAX_VALUE_BYTES = 32 * 1024
MAX_VARIABLES = 500
# Set by the platform at run time; a user value would break routing or the sandbox.
PLATFORM_NAMES = frozenset({"PORT", "PATH", "HOME", "VIRTUAL_ENV", "PYTHONHOME"})
PLATFORM_PREFIX = "PHEMERAL_"


def check_variable(key: str, value: str) -> None:
    if not NAME.match(key):
        raise InvalidInput(
            f"variable name {key!r} is not valid: use letters, digits and underscores, "
            "not starting with a digit"
        )
    if key in PLATFORM_NAMES or key.upper().startswith(PLATFORM_PREFIX):
        raise InvalidInput(f"variable {key} is set by the platform and cannot be overridden")
    if "\x00" in value:
        raise InvalidInput(f"the value of {key} contains a NUL byte")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise InvalidInput(f"the value of {key} is longer than {MAX_VALUE_BYTES // 1024} KiB")


def parse_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as typed on a command line."""
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"{text!r} is not KEY=VALUE")
    check_variable(key, value)
    return key, value


def runtime_env(
    snapshot: Mapping[str, str],
    *,
    deployment_id: str,
    environment: str,
    deployment_url: str,
    environment_urls: list[str],
) -> dict[str, str]:
    """The variables an app runs with (the runtime adds PORT): the snapshot plus Phemeral's own."""
    env = dict(snapshot)
    env["PHEMERAL_DEPLOYMENT_ID"] = deployment_id
    env["PHEMERAL_ENVIRONMENT"] = environment
    env["PHEMERAL_URL"] = deployment_url
    env["PHEMERAL_ENVIRONMENT_URLS"] = " ".join(environment_urls)
    return env
