"""The result of detection: every decision, where it came from, and the warnings."""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect.declared import Declarations, Declared
from phemeral.models import AppSpec


@dataclass(frozen=True)
class Detection:
    root_dir: str  # POSIX, relative to the detected path; "." for the path itself
    python_version: str  # "3.12"
    python_version_source: str  # ".python-version", "pyproject.toml", "platform default", …
    package_manager: str  # "uv" | "poetry" | "pipenv" | "pip"
    framework: str  # "fastapi" | "flask" | "django"; "" when not detected (custom command)
    entrypoint: str  # "main:app", "app:create_app()", "mysite.wsgi:application"; or ""
    start_command: str  # the autodetected default; "" when there is none
    app_spec: AppSpec | None  # None: no entry point was found (only with a custom command)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # decision → "file:line"
    missing_server: str | None = None  # a server package the build must add
    app_dir: str = ""  # directory (relative to root_dir) the entry module is imported from
    workspace_root: str | None = None  # uv workspace holding the lock, when root_dir is a member
    # What the repository declares (Procfile, phemeral.toml, other platforms' files):
    start_command_source: str = "autodetected"  # of `start_command`: "procfile", … (no custom)
    autodetected_command: str = ""  # the default command, whether or not it is used
    declared: Declarations = field(default_factory=Declarations)
    settings: dict[str, object] = field(default_factory=dict)  # health path, idle/release timeout
    dependency_names: frozenset[str] = frozenset()  # the production set (PEP 503 names)

    def lacks(self, package: str) -> bool:
        """Whether ``package`` is not among the production dependencies."""
        return package not in self.dependency_names

    def to_json(self) -> dict[str, object]:
        """The object ``phemeral detect --json`` prints (the documented keys first)."""
        return {
            "root_dir": self.root_dir,
            "python_version": self.python_version,
            "python_version_source": self.python_version_source,
            "package_manager": self.package_manager,
            "framework": self.framework,
            "entrypoint": self.entrypoint,
            "start_command": self.start_command,
            "warnings": list(self.warnings),
            "sources": dict(self.sources),
            "missing_server": self.missing_server,
            "interface": self.app_spec.interface if self.app_spec else None,
            "server": self.app_spec.server if self.app_spec else None,
            "app_dir": self.app_dir,
            "django_settings_module": (
                self.app_spec.django_settings_module if self.app_spec else None
            ),
            "workspace_root": self.workspace_root,
            "start_command_source": self.start_command_source,
            "autodetected_start_command": self.autodetected_command or self.start_command,
            **self.declared.to_json(),
            **self.settings,
        }

    def summary(self) -> str:
        """A readable multi-line report (the CLI's and the build log's)."""
        where = self.sources
        lines = [
            f"root dir         {self.root_dir}  ({where.get('root_dir', '')})",
            f"python           {self.python_version}  ({where.get('python_version', '')})",
            f"package manager  {self.package_manager}  ({where.get('package_manager', '')})",
        ]
        if self.app_spec is None:
            lines.append("entry point      not detected (not needed: the start command is given)")
        else:
            lines += [
                f"framework        {self.framework}  ({where.get('framework', '')})",
                f"entry point      {self.entrypoint}  ({where.get('entrypoint', '')})",
            ]
        if self.start_command:
            lines.append(f"start command    {self.start_command}  ({self._start_where()})")
        if self.declared.release is not None:
            rel = self.declared.release
            lines.append(f"release command  {rel.command}  ({rel.location})")
        for name, proc in self.declared.processes.items():
            lines.append(f"process {name:<8} {proc.command}  ({proc.location})")
        for key in ("health_check_path", "idle_timeout", "release_timeout"):
            if key in self.settings:
                lines.append(f"{key:<16} {self.settings[key]}  ({where.get(key, '')})")
        notes = [n for d in self._declared_all() for n in d.notes]
        lines += [f"note: {n}" for n in notes]
        lines += [f"not used: {u}" for u in self.declared.unused]
        lines += [f"hint: {h}" for h in self.declared.hints]
        if self.missing_server:
            lines.append(f"server           {self.missing_server} (added by the build)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _start_where(self) -> str:
        if self.start_command_source == "autodetected":
            return "autodetected"
        return f"{self.start_command_source}, {self.sources.get('start_command', '')}"

    def _declared_all(self) -> list[Declared]:
        found = [self.declared.start, self.declared.release, *self.declared.processes.values()]
        return [d for d in found if d is not None]
