"""Names that end up in host names: projects, environments, domains, deployment ids (pure)."""

from __future__ import annotations

import re
import secrets

from phemeral.errors import InvalidInput

PROJECT_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")  # ≤ 40
ENVIRONMENT_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$")  # ≤ 20
DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1123 label

ID_FIRST = "abcdefghijklmnopqrstuvwxyz"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32, lowercase
ID_LENGTH = 12  # 5 + 11 * 5 = 59.7 bits of randomness
DEPLOYMENT_ID = re.compile(rf"^[a-z][a-z2-7]{{{ID_LENGTH - 1}}}$")

# Labels people must not claim: they would shadow the platform or confuse users.
RESERVED_LABELS = frozenset(
    {"api", "www", "admin", "dashboard", "phemeral", "localhost", "static", "assets", "status"}
    | {"mail", "smtp", "ftp", "ns1", "ns2", "webhooks", "github", "login", "auth", "internal"}
)


def new_deployment_id() -> str:
    """A short, lowercase, unguessable DNS label: a letter, then base32 characters."""
    rest = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH - 1))
    return secrets.choice(ID_FIRST) + rest


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.match(name):
        raise InvalidInput(
            f"project name {name!r} is not valid: use 1–40 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    _check_not_reserved(name, "project name")
    return name


def check_environment_name(name: str) -> str:
    if not ENVIRONMENT_NAME.match(name):
        raise InvalidInput(
            f"environment name {name!r} is not valid: use 1–20 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen"
        )
    return name


def check_domain_label(label: str) -> str:
    """A custom environment subdomain: one DNS label, not reserved, not shaped like an id."""
    label = label.strip().lower()
    if not DOMAIN_LABEL.match(label):
        raise InvalidInput(
            f"domain {label!r} is not a valid subdomain: use 1–63 lowercase letters, digits "
            "and hyphens, not starting or ending with a hyphen"
        )
    _check_not_reserved(label, "domain")
    if DEPLOYMENT_ID.match(label):
        raise InvalidInput(
            f"domain {label!r} has the shape of a deployment id; pick a name with a hyphen "
            "or of another length"
        )
    return label


def default_domain(project: str, environment: str) -> str:
    """``{project}-{environment}``: at most 40 + 1 + 20 = 61 characters, always a valid label."""
    return f"{project}-{environment}"


def check_branch(branch: str) -> str:
    if (
        not branch
        or len(branch) > 255
        or any(c in branch for c in " ~^:?*[\\\x00")
        or ".." in branch
    ):
        raise InvalidInput(f"branch {branch!r} is not a valid git branch name")
    return branch


def _check_not_reserved(label: str, what: str) -> None:
    if label in RESERVED_LABELS:
        raise InvalidInput(f"{what} {label!r} is reserved by the platform; pick another")


def check_custom_domain(name: str, base_domain: str) -> str:
    """A full host name people point at the platform (``shop.example.com``).

    At least two labels of letters, digits and hyphens, ≤ 253 characters, no wildcard, no IP
    literal, and not the base domain or a name below it (those are the platform's own).
    """
    name = name.strip().lower().rstrip(".")
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(DOMAIN_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidInput(
            f"domain {name!r} is not a valid host name: use labels of letters, digits and "
            "hyphens separated by dots, like shop.example.com"
        )
    base = base_domain.lower().rstrip(".")
    if name == base or name.endswith("." + base):
        raise InvalidInput(
            f"domain {name!r} is under the platform's base domain {base!r}: "
            "add it as an environment domain instead"
        )
    return name
