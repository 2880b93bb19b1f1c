"""The layout of the async core: imports run one way, from no-I/O helpers up to the client."""

from __future__ import annotations

import ast
from pathlib import Path

import hopx_async

PACKAGE = Path(hopx_async.__file__).parent


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``hopx_async`` modules it imports (``hopx_async.local`` as one module)."""
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    targets.append(node.module.split(".")[0])
                else:
                    targets.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hopx_async"):
                parts = (node.module or "").split(".")
                targets.append(parts[1] if len(parts) > 1 else "__init__")
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_core_modules() -> None:
    graph = import_graph()
    assert {*NO_IO, *IO} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: the modules that decide and parse without I/O
NO_IO = ("_wire", "_retry", "_lists", "_output", "_models", "_results", "_fields")
#: the modules that send requests, or build on those that do
IO = {
    "_transport",
    "_control",
    "_connection",
    "_agent",
    "_watcher",
    "_process",
    "_files",
    "_execution",
    "_commands",
    "_sandbox",
    "_fanout",
    "_client",
    "_defaults",
}


def test_no_io_helpers_import_no_io_modules() -> None:
    """The no-I/O helpers decide; they never import the transport nor anything above it."""
    graph = import_graph()
    for name in NO_IO:
        assert not graph[name] & IO, f"{name} imports {sorted(graph[name] & IO)}"
        source = (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
        assert "aiohttp" not in source and "asyncio" not in source, f"{name} does I/O"


#: The module-level mutable state allowed (issue 15): the default client of each event loop,
#: and the loop thread's bookkeeping that keeps fork safety working.
ALLOWED_MODULE_STATE = {
    ("_defaults", "_defaults"),
    ("_loopthread", "_serving"),
    ("_loopthread", "_orphans"),
}
_CONTAINERS = {"WeakKeyDictionary", "WeakValueDictionary", "WeakSet", "dict", "set", "list"}
_CONTAINERS |= {"defaultdict", "OrderedDict", "deque"}


def module_state(source: str) -> list[str]:
    """Names bound at module level to a container that starts empty: a registry in which
    collaborators would be looked up instead of handed over at construction."""
    found: list[str] = []
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        value = node.value
        func = value.func if isinstance(value, ast.Call) else None
        called = getattr(func, "attr", None) or getattr(func, "id", None)
        empty = isinstance(value, ast.Dict) and not value.keys
        empty = empty or (isinstance(value, (ast.Set, ast.List)) and not value.elts)
        if called in _CONTAINERS or empty:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [t.id for t in targets if isinstance(t, ast.Name)]
    return found


def test_no_module_level_registries() -> None:
    """Collaborators are given at construction (a handle its watcher, a sandbox its keeper on
    its agent), never looked up in a module's global dictionary."""
    found = {
        (str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."), name)
        for path in PACKAGE.rglob("*.py")
        for name in module_state(path.read_text(encoding="utf-8"))
    }
    assert found - ALLOWED_MODULE_STATE == set()


def test_the_registry_finder_finds_registries() -> None:
    source = (
        "import weakref\n"
        "_held: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()\n"
        "_seen = {}\n"
        "TABLE = {'a': 1}\n"
        "_queue = collections.deque()\n"
    )
    assert module_state(source) == ["_held", "_seen", "_queue"]
