"""Turn a ``Pipfile.lock`` into the hashed, pinned requirements of its ``default`` set (pure).

Pipenv itself never runs: every entry of ``default`` becomes ``name==version ; markers`` with
each of its ``--hash`` values, installed by ``uv pip install --require-hashes --no-deps``, so
exactly the locked artifacts are installed. A lone ``Pipfile`` (no lock) gives its
``[packages]`` as plain requirements, resolved afresh.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass

from phemeral.errors import BuildError

STAGE = "install"


@dataclass(frozen=True)
class PipenvPlan:
    lines: tuple[str, ...]
    hashed: bool  # every line carries hashes (install with --require-hashes --no-deps)
    install_root: bool  # the lock installs the project itself (`-e .` in Pipfile)

    def requirements_text(self) -> str:
        return "\n".join(self.lines) + "\n"


def plan_lock(lock_text: str) -> PipenvPlan:
    """The ``default`` section of a Pipfile.lock as hashed requirement lines."""
    try:
        data = json.loads(lock_text)
    except ValueError as exc:
        raise BuildError(f"Pipfile.lock is not valid JSON: {exc}", stage=STAGE) from exc
    default = data.get("default") if isinstance(data, dict) else None
    if not isinstance(default, dict):
        raise BuildError("Pipfile.lock has no `default` section; run `pipenv lock`", stage=STAGE)
    lines: list[str] = []
    install_root = False
    for name, entry in sorted(default.items()):
        if not isinstance(entry, dict):
            continue
        if entry.get("path") in (".", "./") or (entry.get("editable") and entry.get("path")):
            install_root = True
            continue
        if "git" in entry or "file" in entry or "path" in entry:
            where = entry.get("git") or entry.get("file") or entry.get("path")
            raise BuildError(
                f"Pipfile.lock installs {name} from {where}, which cannot be verified by hash; "
                "publish it to an index or vendor it as a wheel",
                stage=STAGE,
            )
        version = entry.get("version")
        hashes = [h for h in entry.get("hashes") or [] if isinstance(h, str)]
        if not isinstance(version, str) or not version.startswith("=="):
            raise BuildError(
                f"Pipfile.lock has no pinned version for {name}; run `pipenv lock`", stage=STAGE
            )
        if not hashes:
            raise BuildError(
                f"Pipfile.lock has no hashes for {name}; run `pipenv lock`", stage=STAGE
            )
        extras = entry.get("extras") or []
        extra = f"[{','.join(extras)}]" if extras else ""
        marker = entry.get("markers")
        line = f"{name}{extra}{version}"
        if isinstance(marker, str) and marker.strip():
            line += f" ; {marker}"
        line += "".join(f" \\\n    --hash={h}" for h in sorted(hashes))
        lines.append(line)
    return PipenvPlan(tuple(lines), hashed=True, install_root=install_root)


def plan_pipfile(pipfile_text: str) -> PipenvPlan:
    """A Pipfile's ``[packages]`` as plain requirements (no lock: resolved afresh)."""
    try:
        data = tomllib.loads(pipfile_text)
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"Pipfile cannot be parsed: {exc}", stage=STAGE) from exc
    lines: list[str] = []
    install_root = False
    for name, spec in (data.get("packages") or {}).items():
        if isinstance(spec, str):
            lines.append(name if spec.strip() in ("*", "") else f"{name}{_spec(spec)}")
        elif isinstance(spec, dict):
            if spec.get("path") in (".", "./"):
                install_root = True
                continue
            if "git" in spec:
                ref = f"@{spec['ref']}" if spec.get("ref") else ""
                lines.append(f"{name} @ git+{spec['git']}{ref}")
                continue
            extras = spec.get("extras") or []
            extra = f"[{','.join(extras)}]" if extras else ""
            version = spec.get("version", "*")
            line = f"{name}{extra}" + ("" if version == "*" else _spec(str(version)))
            if spec.get("markers"):
                line += f" ; {spec['markers']}"
            lines.append(line)
    return PipenvPlan(tuple(lines), hashed=False, install_root=install_root)


def _spec(version: str) -> str:
    version = version.strip()
    return version if version[:1] in "=<>!~" else f"=={version}"
