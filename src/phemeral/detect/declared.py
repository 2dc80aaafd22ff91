"""What a repository declares about how it runs, and which declaration wins.

Sources, highest first (each looked for in the app's root dir, then the repository root):

1. ``phemeral.toml`` (`config_file`): start, release, processes and settings;
2. ``Procfile`` (`procfile`): ``web`` = start, ``release``, any other name = a process;
3. ``railway.json``, ``railway.toml``, ``render.yaml``, ``heroku.yml`` (`platforms`): start and
   release. A start command there of the shape ``steps && server …`` without a release command
   of its own has its leading steps split off into the release command (they ran before every
   start on that platform; here they run once per deployment).

``app.json`` and a ``Dockerfile`` CMD are only hints. Declared start, release and process
commands that start a known web server are bound to ``$PORT`` (`binding.bind_to_port`); each
change is a note in the build log. Above all of this stands the project's saved custom command,
and below it the autodetected default (`command.resolve_start_command`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phemeral.detect import procfile
from phemeral.detect.binding import bind_to_port, split_release_step
from phemeral.detect.config_file import ConfigFile, read_config
from phemeral.detect.manifests import join
from phemeral.detect.platforms import platform_hints, read_platform_commands
from phemeral.detect.tree import SourceTree

SETTINGS = ("root_dir", "python_version", "health_check_path", "idle_timeout", "release_timeout")


@dataclass(frozen=True)
class Declared:
    command: str
    source: str  # "phemeral.toml" | "procfile" | "railway.json" | … (start_command_source)
    location: str  # "Procfile:1"
    notes: tuple[str, ...] = ()


@dataclass
class Declarations:
    start: Declared | None = None
    release: Declared | None = None
    processes: dict[str, Declared] = field(default_factory=dict)
    settings: dict[str, tuple[str | float, str]] = field(default_factory=dict)  # → (value, where)
    hints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # lower declarations, and why not taken

    def to_json(self) -> dict[str, object]:
        return {
            "release_command": self.release.command if self.release else None,
            "release_command_source": self.release.source if self.release else None,
            "processes": {name: d.command for name, d in self.processes.items()},
            "process_sources": {name: d.location for name, d in self.processes.items()},
            "declared_hints": list(self.hints),
            "declarations_not_used": list(self.unused),
        }


def read_root_config(tree: SourceTree) -> ConfigFile | None:
    """The repository root's ``phemeral.toml`` (read before the root dir is decided)."""
    return read_config(tree, "")


def _bound(command: str, source: str, location: str, notes: tuple[str, ...] = ()) -> Declared:
    bound, note = bind_to_port(command)
    return Declared(bound, source, location, (*notes, note) if note else notes)


def read_declarations(
    tree: SourceTree, root_dir: str, root_config: ConfigFile | None
) -> Declarations:
    """Every declaration for the app in ``root_dir`` (relative to the repository root)."""
    out = Declarations()
    directories = [root_dir, ""] if root_dir else [""]
    configs = [c for c in (read_config(tree, root_dir) if root_dir else None, root_config) if c]
    for config in configs:
        out.warnings += config.warnings
    # -- phemeral.toml: settings, start, release, processes (the folder's file wins) ----------
    for config in configs:
        for key in SETTINGS:
            value = config.values.get(key)
            if value is not None and key not in out.settings:
                out.settings[key] = (value.value, value.location)
        config_start = config.values.get("start")
        if config_start is not None and out.start is None:
            out.start = _bound(str(config_start.value), "phemeral.toml", config_start.location)
        declared_release = config.values.get("release")
        if declared_release is not None and out.release is None:
            out.release = Declared(
                str(declared_release.value), "phemeral.toml", declared_release.location
            )
        for name, value in config.processes.items():
            out.processes.setdefault(
                name, _bound(str(value.value), "phemeral.toml", value.location)
            )
    # -- Procfile ----------------------------------------------------------------------------
    for directory in directories:
        path = join(directory, procfile.FILENAME)
        text = tree.read_text(path)
        if text is None:
            continue
        for entry in procfile.parse_procfile(text, path):
            where = f"{path}:{entry.line}"
            if entry.name == "web":
                if out.start is None:
                    out.start = _bound(entry.command, "procfile", where)
                else:
                    out.unused.append(f"{where} web: {out.start.location} declares the start")
            elif entry.name == "release":
                if out.release is None:
                    out.release = Declared(entry.command, "procfile", where)
                else:
                    out.unused.append(f"{where} release: {out.release.location} declares it")
            elif entry.name not in out.processes:
                out.processes[entry.name] = _bound(entry.command, "procfile", where)
        break  # the Procfile nearest the app is the app's
    # -- other platforms' files ---------------------------------------------------------------
    for found in read_platform_commands(tree, directories, out.warnings):
        release = found.release
        start = found.start
        notes: tuple[str, ...] = ()
        split_release = None
        if start is not None and release is None:
            split_release, rest = split_release_step(start)
            if split_release is not None:
                notes = (
                    f"{found.path}: the leading step `{split_release}` of startCommand runs as "
                    "the release command (once per deployment, before it serves)",
                )
                start = rest
        if start is not None:
            if out.start is None:
                out.start = _bound(start, found.source, f"{found.path} startCommand", notes)
            else:
                out.unused.append(
                    f"{found.path} start command: {out.start.location} declares the start"
                )
        if (
            release is None
            and split_release is not None
            and out.start is not None
            and out.start.source == found.source
        ):
            release = split_release
        if release is not None:
            if out.release is None:
                out.release = Declared(release, found.source, f"{found.path} release")
            else:
                out.unused.append(
                    f"{found.path} release command: {out.release.location} declares it"
                )
    out.hints = platform_hints(tree, directories)
    return out
