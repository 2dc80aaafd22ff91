"""Finding the FastAPI / Flask application object by reading the code's AST (never importing it).

A *candidate* is a module-level name bound to ``FastAPI(...)`` / ``Flask(...)`` (plain or
annotated assignment, through any import alias), a name bound to a call of any function that
builds the app (``app = get_application()``, ``app = create_app(ProdConfig)``, the function
local or imported), a top-level factory function itself (``create_app``, ``make_app``,
``get_application``, …: served with the servers' factory syntax, and only when it can be called
without arguments), or a re-export (``from .main import app``). Candidates are ranked the way
the frameworks' own CLIs look (a helper script that only re-exports the app comes last):
shallow modules first, then the conventional file names (FastAPI: main, app, api; Flask:
wsgi, app, the ``app`` package), then the conventional variable names (app, api, application).
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from phemeral.detect.tree import SourceTree

FRAMEWORK_CLASSES = {"fastapi": ("fastapi", "FastAPI"), "flask": ("flask", "Flask")}
FACTORY_NAMES = ("create_app", "make_app")
_FACTORY_NAME = re.compile(r"^(create|make|get|build|init)_?(app|application|api|server)$")
REEXPORT_NAMES = ("app", "application", "api")
SCAN_SKIP = frozenset({"tests", "test", "docs", "doc", "migrations", "examples", "scripts"})
MAX_PY_FILES = 2000
_HINTS = ("FastAPI", "Flask", "_app", "_application", "import app", "import api")
_BASENAME_RANK = {
    "fastapi": ("main", "app", "api", "asgi", "server", "__init__"),
    "flask": ("wsgi", "app", "__init__", "main", "server", "application"),
}
_NAME_RANK = {"fastapi": ("app", "api", "application"), "flask": ("app", "application")}


@dataclass(frozen=True)
class AppCandidate:
    framework: str  # "fastapi" | "flask"
    file: str  # relative to the tree root
    line: int
    module: str  # dotted import path, relative to app_dir
    attr: str
    factory: bool
    app_dir: str  # directory (relative to the project dir) the module is imported from; "" = it
    kind: int  # 0 instance, 1 re-export, 2 factory function
    needs: tuple[str, ...] = ()  # a factory's parameters without defaults

    @property
    def target(self) -> str:
        return f"{self.module}:{self.attr}"

    def rank(self) -> tuple[int, int, int, int, int]:
        depth = self.module.count(".")
        base = self.module.rsplit(".", 1)[-1]
        if self.file.endswith("__init__.py"):
            base = "__init__"
        names = _BASENAME_RANK[self.framework]
        preferred = _NAME_RANK[self.framework]
        # a helper script that only imports the app (create_db.py: `from project.app import
        # app`) is not where the app lives: the module it comes from ranks first
        helper = int(self.kind == 1 and base not in names)
        return (
            helper,
            depth,
            names.index(base) if base in names else len(names),
            preferred.index(self.attr) if self.attr in preferred else len(preferred),
            self.kind,
        )


@dataclass
class ModuleScan:
    file: str
    module: str
    app_dir: str
    instances: dict[str, tuple[str | None, int, str | None]] = field(default_factory=dict)
    # name → (framework or None when unknown, line, the factory it was built by)
    factories: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    # top-level functions: name → (framework its body builds, or None; line; required params)
    functions: dict[str, tuple[str | None, int, tuple[str, ...]]] = field(default_factory=dict)
    reexports: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # name → (absolute module, original name, line)
    imported_factories: dict[str, tuple[str, str]] = field(default_factory=dict)
    # every `from X import name`: local name → (absolute module, original name)
    hidden: list[tuple[str, int, str]] = field(default_factory=list)  # (framework, line, where)


@dataclass
class EntrypointScan:
    candidates: list[AppCandidate]
    modules: list[ModuleScan]
    files_scanned: list[str]
    hidden: list[str]  # human descriptions of apps built only under __main__ / in functions


def module_path(rel: str) -> tuple[str, str] | None:
    """(dotted module, app_dir) of a file relative to the project dir; None if unimportable."""
    parts = rel[:-3].split("/")
    app_dir_parts: list[str] = []
    if parts[0] == "src" and len(parts) > 1:
        app_dir_parts, parts = ["src"], parts[1:]
    # Climb from the file while directories are identifiers; stop at the first that is not.
    start = len(parts) - 1
    while start > 0 and parts[start - 1].isidentifier() and not keyword.iskeyword(parts[start - 1]):
        start -= 1
    app_dir_parts += parts[:start]
    module_parts = parts[start:]
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        if not module_parts:
            return None
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in module_parts):
        return None
    return ".".join(module_parts), "/".join(app_dir_parts)


class _Imports:
    """Which local names refer to the framework classes, modules and factories."""

    def __init__(self) -> None:
        self.classes: dict[str, str] = {}  # local name → framework
        self.modules: dict[str, str] = {}  # local alias → framework (``import fastapi as fa``)

    def framework_of_call(self, call: ast.expr) -> str | None:
        if not isinstance(call, ast.Call):
            return None
        func = call.func
        if isinstance(func, ast.Name):
            return self.classes.get(func.id)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            framework = self.modules.get(func.value.id)
            if framework and FRAMEWORK_CLASSES[framework][1] == func.attr:
                return framework
        return None


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


def _body_framework(node: ast.FunctionDef | ast.AsyncFunctionDef, imports: _Imports) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            framework = imports.framework_of_call(sub)
            if framework:
                return framework
    return None


def scan_module(text: str, file: str, module: str, app_dir: str) -> ModuleScan | None:
    try:
        tree = ast.parse(text, filename=file)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    scan = ModuleScan(file=file, module=module, app_dir=app_dir)
    imports = _Imports()
    is_package = file.endswith("__init__.py")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module in ("fastapi", "flask")
        ):
            for alias in node.names:
                if alias.name == FRAMEWORK_CLASSES[node.module][1]:
                    imports.classes[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("fastapi", "flask"):
                    imports.modules[alias.asname or alias.name] = alias.name
    for node in tree.body:  # local subclasses construct the framework's app too
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                framework = imports.framework_of_call(ast.Call(func=base, args=[], keywords=[]))
                if framework:
                    imports.classes[node.name] = framework
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            framework = _body_framework(node, imports)
            scan.functions[node.name] = (framework, node.lineno, _required(node))
            if is_factory_name(node.name):
                scan.factories[node.name] = (framework, node.lineno)
            else:
                _note_hidden(node, imports, scan, f"inside function {node.name}()")
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, module, is_package)
            if source in ("fastapi", "flask"):
                continue
            for alias in node.names:
                local = alias.asname or alias.name
                if local in REEXPORT_NAMES:
                    scan.reexports[local] = (source, alias.name, node.lineno)
                else:
                    scan.imported_factories[local] = (source, alias.name)
        elif isinstance(node, ast.If):
            where = 'under `if __name__ == "__main__":`' if _is_main_guard(node) else "in an if"
            _note_hidden(node, imports, scan, where)
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None:
            continue
        framework = imports.framework_of_call(value)
        factory: str | None = None
        if framework is None and isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            name = value.func.id
            if name in scan.functions or name in scan.imported_factories:
                factory = name  # resolved later: it counts when it builds the app
        if framework is None and factory is None:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                scan.instances[target.id] = (framework, node.lineno, factory)
    return scan


def is_factory_name(name: str) -> bool:
    return name in FACTORY_NAMES or bool(_FACTORY_NAME.match(name))


def _required(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    """The parameters a call without arguments would miss."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    without_default = positional[: len(positional) - len(args.defaults)]
    kw_required = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return tuple(a.arg for a in [*without_default, *kw_required])


def _is_main_guard(node: ast.If) -> bool:
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _note_hidden(node: ast.AST, imports: _Imports, scan: ModuleScan, where: str) -> None:
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
            framework = imports.framework_of_call(sub.value)
            if framework:
                scan.hidden.append((framework, sub.lineno, where))
                return


def python_files(tree: SourceTree, project_dir: str, max_depth: int = 4) -> Iterable[str]:
    count = 0
    for path in tree.walk_files(project_dir, max_depth=max_depth, suffix=".py"):
        rel = path[len(project_dir) + 1 :] if project_dir else path
        if any(part in SCAN_SKIP for part in rel.split("/")[:-1]):
            continue
        count += 1
        if count > MAX_PY_FILES:
            return
        yield path


def scan_entrypoints(tree: SourceTree, project_dir: str) -> EntrypointScan:
    modules: list[ModuleScan] = []
    scanned: list[str] = []
    for path in python_files(tree, project_dir):
        rel = path[len(project_dir) + 1 :] if project_dir else path
        located = module_path(rel)
        if located is None:
            continue
        text = tree.read_text(path)
        if text is None or not any(hint in text for hint in _HINTS):
            continue
        scanned.append(path)
        scan = scan_module(text, path, *located)
        if scan is not None:
            modules.append(scan)
    by_module = {m.module: m for m in modules}

    def framework_of(module: str, name: str, depth: int = 0) -> str | None:
        scan = by_module.get(module)
        if scan is None or depth > 5:
            return None
        if name in scan.instances:
            framework, _, factory = scan.instances[name]
            if framework is None and factory is not None:
                return framework_of(module, factory, depth + 1)
            return framework
        if name in scan.functions:
            return scan.functions[name][0]
        if name in scan.imported_factories:
            return framework_of(*scan.imported_factories[name], depth + 1)
        if name in scan.reexports:
            source, original, _ = scan.reexports[name]
            return framework_of(source, original, depth + 1)
        return None

    candidates: list[AppCandidate] = []
    hidden: list[str] = []
    for scan in modules:
        for name in scan.instances:
            resolved = framework_of(scan.module, name)
            line = scan.instances[name][1]
            if resolved:
                candidates.append(
                    AppCandidate(
                        resolved, scan.file, line, scan.module, name, False, scan.app_dir, 0
                    )
                )
        for name, (source, original, line) in scan.reexports.items():
            resolved = framework_of(source, original)
            if resolved and name not in scan.instances:
                factory = is_factory_name(original)
                candidates.append(
                    AppCandidate(
                        resolved, scan.file, line, scan.module, name, factory, scan.app_dir, 1
                    )
                )
        for name, (framework, line) in scan.factories.items():
            if framework:
                needs = scan.functions[name][2]
                candidates.append(
                    AppCandidate(
                        framework,
                        scan.file,
                        line,
                        scan.module,
                        name,
                        True,
                        scan.app_dir,
                        2,
                        needs,
                    )
                )
        for framework, line, where in scan.hidden:
            hidden.append(f"{scan.file}:{line} builds a {_label(framework)} app {where}")
    candidates.sort(key=lambda c: (c.rank(), c.file, c.attr))
    return EntrypointScan(candidates, modules, scanned, hidden)


def _label(framework: str) -> str:
    return {"fastapi": "FastAPI", "flask": "Flask"}.get(framework, framework)


def describe_candidates(candidates: Iterable[AppCandidate]) -> str:
    return ", ".join(
        f"{c.target}{'()' if c.factory else ''} ({c.file}:{c.line}, {_label(c.framework)})"
        for c in candidates
    )
