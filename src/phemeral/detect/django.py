"""Django: ``manage.py`` → settings module (split settings packages too) → the WSGI/ASGI target.

Settings are read from the AST, following ``from .base import *`` chains in order, so
``WSGI_APPLICATION="x.wsgi.application"`` is found whatever its quoting or its file. The
settings the server runs with are those the ``wsgi.py``/``asgi.py`` module sets by default,
which may differ from ``manage.py``'s (cookiecutter layouts): that difference is a warning.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from phemeral.detect.manifests import join
from phemeral.detect.tree import SourceTree
from phemeral.errors import DetectionError

MAX_STAR_DEPTH = 6


@dataclass
class DjangoApp:
    settings_module: str  # what the server runs with
    target: str  # "mysite.wsgi:application"
    interface: str  # "wsgi" | "asgi"
    source: str  # "file:line" the target came from
    settings_source: str
    warnings: list[str] = field(default_factory=list)


def _parse(tree: SourceTree, path: str) -> ast.Module | None:
    text = tree.read_text(path)
    if text is None:
        return None
    try:
        return ast.parse(text, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def settings_default(tree: SourceTree, path: str) -> tuple[str, int] | None:
    """The ``DJANGO_SETTINGS_MODULE`` a module sets by default (``setdefault`` or assignment)."""
    module = _parse(tree, path)
    if module is None:
        return None
    for node in ast.walk(module):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "DJANGO_SETTINGS_MODULE"
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            return node.args[1].value, node.lineno
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].slice, ast.Constant)
            and node.targets[0].slice.value == "DJANGO_SETTINGS_MODULE"
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value, node.lineno
    return None


def module_file(tree: SourceTree, project_dir: str, dotted: str) -> str | None:
    base = join(project_dir, dotted.replace(".", "/"))
    for candidate in (base + ".py", base + "/__init__.py"):
        if tree.is_file(candidate):
            return candidate
    return None


def read_settings(
    tree: SourceTree, project_dir: str, dotted: str, depth: int = 0
) -> dict[str, tuple[object, str]]:
    """Module-level constant settings (name → (value, "file:line")), star imports followed."""
    path = module_file(tree, project_dir, dotted)
    values: dict[str, tuple[object, str]] = {}
    if path is None or depth > MAX_STAR_DEPTH:
        return values
    module = _parse(tree, path)
    if module is None:
        return values
    is_package = path.endswith("__init__.py")
    for node in module.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            parts = dotted.split(".") if is_package else dotted.split(".")[:-1]
            if node.level:
                parts = parts[: len(parts) - (node.level - 1)]
                source = ".".join([*parts, node.module] if node.module else parts)
            else:
                source = node.module or ""
            values.update(read_settings(tree, project_dir, source, depth + 1))
            continue
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        value_node = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper():
                try:
                    value = ast.literal_eval(value_node) if value_node is not None else None
                except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                    value = None
                values[target.id] = (value, f"{path}:{node.lineno}")
    return values


def _dotted_target(value: object) -> tuple[str, str] | None:
    if not isinstance(value, str) or "." not in value:
        return None
    module, _, attr = value.strip().rpartition(".")
    if not all(part.isidentifier() for part in [*module.split("."), attr]):
        return None
    return module, attr


def detect_django(tree: SourceTree, project_dir: str, asgi_hint: bool) -> DjangoApp:
    """``asgi_hint``: channels/daphne are production dependencies."""
    warnings: list[str] = []
    manage = join(project_dir, "manage.py")
    found = settings_default(tree, manage)
    if found is not None:
        settings, line = found
        settings_source = f"{manage}:{line}"
    else:
        guesses = [
            f"{name}.settings"
            for name, is_dir in tree.listdir(project_dir)
            if is_dir and module_file(tree, project_dir, f"{name}.settings")
        ]
        if len(guesses) != 1:
            raise DetectionError(
                f"{manage} does not set DJANGO_SETTINGS_MODULE, and "
                + (
                    f"several settings modules exist ({', '.join(guesses)})"
                    if guesses
                    else "no <package>/settings.py was found"
                )
                + '. Add `os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")` '
                "to manage.py."
            )
        settings, settings_source = guesses[0], manage
    if module_file(tree, project_dir, settings) is None:
        raise DetectionError(
            f"{settings_source} points at settings module {settings!r}, but neither "
            f"{settings.replace('.', '/')}.py nor {settings.replace('.', '/')}/__init__.py exists. "
            "Fix DJANGO_SETTINGS_MODULE in manage.py."
        )
    values = read_settings(tree, project_dir, settings)
    apps = values.get("INSTALLED_APPS", (None, ""))[0]
    if isinstance(apps, (list, tuple)) and any(a in ("channels", "daphne") for a in apps):
        asgi_hint = True
    asgi_value, asgi_where = values.get("ASGI_APPLICATION", (None, ""))
    wsgi_value, wsgi_where = values.get("WSGI_APPLICATION", (None, ""))
    package = settings.split(".")[0]
    interface = "asgi" if (asgi_value or asgi_hint) else "wsgi"
    configured = asgi_value if interface == "asgi" else wsgi_value
    where = asgi_where if interface == "asgi" else wsgi_where
    target = _dotted_target(configured)
    if target is not None and module_file(tree, project_dir, target[0]) is None:
        warnings.append(
            f"{where} names {configured!r}, but that module is not in the project; "
            f"using {package}/{interface}.py"
        )
        target = None
    if target is None:
        fallback = f"{package}.{interface}"
        if module_file(tree, project_dir, fallback) is None:
            raise DetectionError(
                f"Django project: looked for {interface.upper()}_APPLICATION in settings "
                f"{settings!r} and for {package}/{interface}.py; found neither. Set "
                f'{interface.upper()}_APPLICATION = "{package}.{interface}.application" and '
                f"commit {package}/{interface}.py (`django-admin startproject` makes both)."
            )
        target, where = (fallback, "application"), module_file(tree, project_dir, fallback) or ""
    server_file = module_file(tree, project_dir, target[0]) or ""
    runtime = settings_default(tree, server_file)
    runtime_settings = settings
    if runtime is not None and runtime[0] != settings:
        runtime_settings = runtime[0]
        warnings.append(
            f"{server_file}:{runtime[1]} defaults to settings {runtime[0]!r} but "
            f"{settings_source} uses {settings!r}; the server runs with {runtime[0]!r} — set "
            "DJANGO_SETTINGS_MODULE to choose"
        )
    return DjangoApp(
        settings_module=runtime_settings,
        target=f"{target[0]}:{target[1]}",
        interface=interface,
        source=where,
        settings_source=settings_source,
        warnings=warnings,
    )
