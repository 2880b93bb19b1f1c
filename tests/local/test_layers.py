"""The layers of the local backend import only downward.

::

    entry    __init__, __main__, backend, ...   (the package root: LocalBackend, the command)
    http     the aiohttp apps, routes, middleware, request parsing
    service  sandboxes, processes, the change feed, foreground runs, webhooks, rendering
    runtime  launching, supervising, output, workspace confinement (no aiohttp)
    state    the layout, the records, the store (no aiohttp)
    base     errors, version (at the package root; they import nothing of the backend)

A module may import modules of its own layer and of the layers below it, never above.
Imports under ``if TYPE_CHECKING:`` are not counted (they do not run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hopx_async.local

PACKAGE = Path(hopx_async.local.__file__).parent
LAYERS = ("base", "state", "runtime", "service", "http", "entry")
#: Modules at the package root that everything may import and that import nothing local.
BASE = frozenset({"errors", "version"})


def runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``tree`` that run: those under ``if TYPE_CHECKING:`` left out
    (their ``else:`` branch kept)."""
    if isinstance(tree, ast.If) and "TYPE_CHECKING" in ast.unparse(tree.test):
        return [node for child in tree.orelse for node in runtime_imports(child)]
    if isinstance(tree, (ast.Import, ast.ImportFrom)):
        return [tree]
    return [node for child in ast.iter_child_nodes(tree) for node in runtime_imports(child)]


def layer_of(module: str) -> str:
    """``http.agent`` -> ``http``; ``errors`` -> ``base``; ``backend`` -> ``entry``."""
    head = module.split(".")[0]
    if head in LAYERS:
        return head
    return "base" if module in BASE else "entry"


def local_modules() -> dict[str, Path]:
    """Every module of ``hopx_async.local`` by dotted name below it (``http.agent``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``hopx_async.local`` it imports at run time."""
    modules = local_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        parts = name.split(".")
        package = parts if parts[-1] == "__init__" else parts[:-1]
        if package and package[-1] == "__init__":
            package = package[:-1]
        targets: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
                names: list[str | None] = [None]
            elif node.level:
                up = node.level - 1
                if up > len(package):
                    continue  # above hopx_async.local: the core
                base = package[: len(package) - up] + (node.module or "").split(".")
                bases = ["hopx_async.local." + ".".join(p for p in base if p)]
                names = [alias.name for alias in node.names]
            else:
                bases = [node.module or ""]
                names = [alias.name for alias in node.names]
            for absolute in bases:
                if not absolute.startswith("hopx_async.local"):
                    continue
                below = absolute.removeprefix("hopx_async.local").lstrip(".")
                for alias in names:
                    candidate = f"{below}.{alias}" if below and alias else (alias or below)
                    if candidate in modules:
                        targets.add(candidate)
                    elif below in modules:
                        targets.add(below)
                    elif f"{below}.__init__" in modules or below == "":
                        targets.add(f"{below}.__init__" if below else "__init__")
        graph[name] = targets - {name}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer (or out of a base module), as ``a -> b``."""
    found = []
    for module, targets in sorted(graph.items()):
        rank = LAYERS.index(layer_of(module))
        for target in sorted(targets):
            target_rank = LAYERS.index(layer_of(target))
            if layer_of(module) == "base" or target_rank > rank:
                found.append(f"{module} -> {target}")
    return found


def imports_of(module: str) -> set[str]:
    """The top-level names of everything ``module`` imports at run time (any package)."""
    tree = ast.parse(local_modules()[module].read_text(encoding="utf-8"))
    names = set()
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_layers_import_only_downward() -> None:
    graph = import_graph()
    assert {layer_of(m) for m in graph} == set(LAYERS), "every layer has modules"
    assert graph["http.agent"] >= {"http.files", "errors", "service.render"}, "graph is read"
    assert upward_imports(graph) == []


def test_runtime_and_state_import_no_aiohttp() -> None:
    for module in local_modules():
        if layer_of(module) in ("runtime", "state", "base"):
            assert not imports_of(module) & {"aiohttp", "yarl", "multidict"}, module
    assert "aiohttp" not in imports_of("runtime.workspace")


def test_the_spawner_imports_the_standard_library_only() -> None:
    """It runs as ``python -I -S spawner.py``: nothing of the project is importable."""
    assert import_graph()["runtime.spawner"] == set()
    assert not imports_of("runtime.spawner") & {"hopx_async", "attrs", "aiohttp", "anyio"}


def test_the_checker_finds_upward_imports() -> None:
    assert upward_imports({"state.store": {"service.processes"}}) == [
        "state.store -> service.processes"
    ]
    assert upward_imports({"runtime.launch": {"http.params"}, "http.params": {"errors"}}) == [
        "runtime.launch -> http.params"
    ]
    assert upward_imports({"errors": {"state.records"}}) == ["errors -> state.records"]
    assert upward_imports({"service.webhooks": {"service.processes", "runtime.tasks"}}) == []
    assert upward_imports({"backend": {"http.app", "state.store"}}) == []


def test_type_checking_imports_are_not_counted() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..http.common import AppState\n"
        "else:\n    from ..state import records\n"
        "def f():\n    from ..runtime import tasks\n"
    )
    found = [ast.unparse(node) for node in runtime_imports(tree)]
    assert found == [
        "from typing import TYPE_CHECKING",
        "from ..state import records",
        "from ..runtime import tasks",
    ]


def test_the_graph_sees_every_form_of_import() -> None:
    """Relative (``from ..x import``, ``from . import x``) and absolute imports are found."""
    graph = import_graph()
    assert "http.files" in graph["http.agent"]  # from . import files
    assert "runtime.fileops" in graph["http.files"]  # from ..runtime import fileops
    assert "state.layout" in graph["runtime.launch"]  # from ..state.layout import Layout
    assert "backend" in graph["__init__"]  # from .backend import LocalBackend


def test_every_module_says_what_it_holds() -> None:
    for module, path in local_modules().items():
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), module
