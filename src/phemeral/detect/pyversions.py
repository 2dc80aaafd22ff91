"""Python version constraints: PEP 440 ranges, Poetry ``^``/``~`` ranges, pinned versions.

A *constraint* is a list of alternatives (Poetry's ``||``), each a PEP 440 `SpecifierSet`;
a ``major.minor`` satisfies it when some patch release of that minor does.
"""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet

KNOWN_MINORS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
_EXACT = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_POETRY_TOKEN = re.compile(r"(\^|~=|~|>=|<=|!=|===|==|>|<|=)?\s*(\*|\d+(?:\.(?:\d+|\*))*)")

Constraint = list[SpecifierSet]


def exact_minor(text: str) -> str | None:
    """``3.12`` / ``3.12.4`` → ``3.12``; anything else → None."""
    match = _EXACT.match(text.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else None


def minor_key(minor: str) -> tuple[int, int]:
    major, _, rest = minor.partition(".")
    return int(major), int(rest or 0)


def parse_pep440(text: str) -> Constraint | None:
    """A PEP 440 specifier set (``>=3.10,<3.12``); None if it cannot be read."""
    try:
        return [SpecifierSet(text.strip())]
    except InvalidSpecifier:
        return None


def _bump(parts: list[int], index: int) -> str:
    upper = parts[: index + 1]
    upper[index] += 1
    return ".".join(str(p) for p in upper)


def _poetry_term(op: str, version: str) -> list[str]:
    if version == "*":
        return []
    if "*" in version:
        return [f"=={version}"] if op in ("", "=", "==") else [f"{op}{version}"]
    parts = [int(p) for p in version.split(".")]
    if op == "^":
        index = next((i for i, p in enumerate(parts) if p != 0), len(parts) - 1)
        return [f">={version}", f"<{_bump(parts, index)}"]
    if op == "~":
        return [f">={version}", f"<{_bump(parts, min(1, len(parts) - 1))}"]
    if op in ("", "="):
        return [f"=={version}"]
    return [f"{op}{version}"]


def parse_poetry(text: str) -> Constraint | None:
    """Poetry's syntax (``^3.11``, ``~3.11``, ``>=3.9,<4``, ``3.11.*``, ``a || b``) as PEP 440."""
    alternatives: Constraint = []
    for alternative in text.split("||"):
        specs: list[str] = []
        rest = alternative.replace(",", " ").strip()
        if not rest:
            return None
        position = 0
        while position < len(rest):
            if rest[position].isspace():
                position += 1
                continue
            match = _POETRY_TOKEN.match(rest, position)
            if not match or match.end() == position:
                return None
            specs.extend(_poetry_term(match.group(1) or "", match.group(2)))
            position = match.end()
        try:
            alternatives.append(SpecifierSet(",".join(specs)))
        except InvalidSpecifier:
            return None
    return alternatives or None


def satisfies(constraint: Constraint, minor: str) -> bool:
    """Whether some release ``minor.N`` meets the constraint."""
    candidates = [minor] + [f"{minor}.{patch}" for patch in range(40)]
    return any(
        spec.contains(version, prereleases=False) for spec in constraint for version in candidates
    )


def describe(constraint: Constraint) -> str:
    return " || ".join(str(spec) or "*" for spec in constraint)
