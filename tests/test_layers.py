"""The packages' layers, read from every import in the code (function-level imports included).

Bottom to top: ``models`` (pipelines, kinds; nothing of ours); ``storage`` (tables, records) and
``i18n`` (the message catalogue), which may read the kind table; ``auth``; ``serving``, which assembles
everything. ``cli`` and ``web`` are
clients: they talk HTTP and import no server package. Inside ``serving`` the route modules are the top:
only ``serving.api`` (and other route modules, for shared helpers) import them. No two modules import
each other, directly or round a loop. docs/architecture.md states the same rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "storage", "i18n", "auth", "serving", "cli", "web")
# package -> the other packages of ours it may import
MAY_IMPORT = {
    "models": set(),
    "storage": {"models"},
    "i18n": {"models"},
    "auth": {"i18n", "storage", "models"},
    "serving": {"auth", "i18n", "storage", "models", "web"},
    "cli": set(),
    "web": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "versions" not in path.parts:  # migration revisions import alembic only
                found[_module_name(path)] = path
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(filter(None, (ours(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(filter(None, (base, node.module)))
                for alias in node.names:
                    target = ours(f"{module}.{alias.name}") if f"{module}.{alias.name}" in modules else ours(module)
                    if target:
                        targets.add(target)
        targets.discard(name)
        graph[name] = targets
    return graph


GRAPH = _import_graph()


def _is_route_module(name: str) -> bool:
    return name.startswith("serving.routes.") or name == "serving.openai.routes"


def test_packages_import_only_the_layers_below_them():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0] and target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    )
    assert upward == []


def test_only_the_app_and_other_routes_import_route_modules():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _is_route_module(target) and not (_is_route_module(module) or module == "serving.api")
    )
    assert upward == []


def test_no_modules_import_each_other():
    """Tarjan's strongly connected components of the import graph: every one a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert loops == []


def test_the_graph_sees_imports_inside_functions():
    """The reader counts lazy imports too (they tie modules just the same): runtime builds tiny ones on demand."""
    assert "models.tiny" in GRAPH["models.runtime"]
    assert "models.runtime" in GRAPH["models.shared"]
