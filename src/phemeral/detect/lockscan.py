"""Fast readers for the layouts uv and Poetry write their lockfiles in.

A real ``uv.lock`` is hundreds of kilobytes; a full TOML parse of it costs more than the whole
detection budget. These scanners read only what detection needs (package names, sources,
dependency edges, groups, ``requires-python``) from the fixed layout the tools emit, and return
None when the text does not look like that layout, so the caller falls back to a full parse.
"""

from __future__ import annotations

import re
from typing import Any

_PACKAGE = re.compile(r"^\[\[package\]\]\n", re.MULTILINE)
_SECTION = re.compile(r"^\[([A-Za-z0-9_.\-]+)\]\n", re.MULTILINE)
_KEY_STRING = re.compile(r'^([A-Za-z0-9_\-]+) = "([^"\n]*)"$', re.MULTILINE)
_ARRAY_START = re.compile(r"^([A-Za-z0-9_.\-]+) = \[(.*)$")
_ITEM = re.compile(r'\{ name = "([^"]+)"([^{}]*)\}')
_EXTRA = re.compile(r"extra = \[([^\]]*)\]")
_SOURCE = re.compile(r'^source = \{ (\w+) = "([^"]*)"', re.MULTILINE)
_STRINGS = re.compile(r'"([^"]*)"')


def _arrays(body: str) -> dict[str, str]:
    """``key = [ ... ]`` arrays of one table body (single- or multi-line) → their inner text."""
    found: dict[str, str] = {}
    lines = body.split("\n")
    index = 0
    while index < len(lines):
        match = _ARRAY_START.match(lines[index])
        index += 1
        if not match:
            continue
        key, rest = match.groups()
        if rest.endswith("]") and rest.count("[") < rest.count("]"):
            found[key] = rest[:-1]
            continue
        collected = [rest]
        while index < len(lines) and lines[index] != "]":
            collected.append(lines[index])
            index += 1
        index += 1
        found[key] = "\n".join(collected)
    return found


def _edges(text: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for name, rest in _ITEM.findall(text or ""):
        item: dict[str, Any] = {"name": name}
        extra = _EXTRA.search(rest)
        if extra:
            item["extra"] = _STRINGS.findall(extra.group(1))
        items.append(item)
    return items


def _split_sections(chunk: str) -> tuple[str, list[tuple[str, str]]]:
    """A package's own table and its ``[package.x]`` sub-tables (headers start a line)."""
    starts: list[tuple[int, int, str]] = []
    index = chunk.find("\n[")
    while index >= 0:
        end = chunk.find("\n", index + 1)
        end = len(chunk) if end < 0 else end
        header = chunk[index + 1 : end]
        if _SECTION.fullmatch(header + "\n"):
            starts.append((index + 1, end + 1, header[1:-1]))
        index = chunk.find("\n[", end)
    if not starts:
        return chunk, []
    sections = [
        (title, chunk[body : starts[i + 1][0] if i + 1 < len(starts) else len(chunk)])
        for i, (_, body, title) in enumerate(starts)
    ]
    return chunk[: starts[0][0]], sections


def scan_uv_lock(text: str) -> dict[str, Any] | None:
    """The subset of a uv.lock that detection reads, shaped like the parsed TOML."""
    header, *chunks = _PACKAGE.split(text)
    if not chunks or not re.search(r"^version = \d+$", header, re.MULTILINE):
        return None
    data: dict[str, Any] = {"package": []}
    header_strings = dict(_KEY_STRING.findall(header))
    if "requires-python" in header_strings:
        data["requires-python"] = header_strings["requires-python"]
    for chunk in chunks:
        main, sections = _split_sections(chunk)
        # Artifact lists (sdist, wheels) come last in a package table and are not needed.
        cut = min(
            (i for i in (main.find("\nsdist = "), main.find("\nwheels = [")) if i >= 0),
            default=len(main),
        )
        main = main[:cut]
        strings = dict(_KEY_STRING.findall(main))
        if "name" not in strings:
            return None
        package: dict[str, Any] = {"name": strings["name"]}
        source = _SOURCE.search(main)
        if source:
            package["source"] = {source.group(1): source.group(2)}
        arrays = _arrays(main)
        package["dependencies"] = _edges(arrays.get("dependencies"))
        for title, body in sections:
            if title == "package.optional-dependencies":
                package["optional-dependencies"] = {
                    extra: _edges(items) for extra, items in _arrays(body).items()
                }
        data["package"].append(package)
    return data


def scan_poetry_lock(text: str) -> dict[str, Any] | None:
    """The subset of a poetry.lock that detection reads, shaped like the parsed TOML."""
    body, _, metadata = text.partition("\n[metadata]\n")
    _, *chunks = _PACKAGE.split(body)
    if not chunks or not metadata:
        return None
    data: dict[str, Any] = {"package": [], "metadata": dict(_KEY_STRING.findall(metadata))}
    for chunk in chunks:
        main, _ = _split_sections(chunk)
        strings = dict(_KEY_STRING.findall(main))
        if "name" not in strings:
            return None
        package: dict[str, Any] = {"name": strings["name"]}
        if "category" in strings:
            package["category"] = strings["category"]
        groups = _arrays(main).get("groups")
        if groups is not None:
            package["groups"] = _STRINGS.findall(groups)
        data["package"].append(package)
    return data
