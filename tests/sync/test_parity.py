"""The generated facade matches the async API name for name, parameter for parameter.

Adding a public async method, class or function without regenerating fails here (and in the
generator's ``--check``).
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import hopx_async
import hopx_sync
from hopx_sync import _runner

ROOT = Path(__file__).resolve().parents[2]

#: the rename rules, spelled out once more (independently of the generator)
TWINS = {
    "AsyncHopx": "Hopx",
    "AsyncSandboxes": "Sandboxes",
    "AsyncSandbox": "Sandbox",
    "AsyncCommands": "Commands",
    "AsyncBackgroundProcess": "BackgroundProcess",
    "AsyncFiles": "Files",
    "AsyncEnv": "Env",
    "AsyncExecution": "Execution",
    "AsyncTerminal": "Terminal",
    "aclose_default_client": "close_default_client",
}
#: async-only names, with no twin
EXCLUDED = {"AwaitableContext"}
MEMBER_RENAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
#: members that are deliberately not mirrored: the twin's constructor is internal, except the
#: client's; __del__ belongs to the async object
NOT_MIRRORED = {"__init__", "__del__"}


def load_generator() -> ModuleType:
    if "gen_sync" in sys.modules:
        return sys.modules["gen_sync"]
    spec = importlib.util.spec_from_file_location("gen_sync", ROOT / "scripts" / "gen_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_sync"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def public_members(cls: type) -> dict[str, Any]:
    """The members a caller may use: public names, mapped dunders, forwarded dunders."""
    out = {}
    for name, value in vars(cls).items():
        if name in NOT_MIRRORED:
            continue
        if (
            not name.startswith("_")
            or name in MEMBER_RENAMES
            or name
            in (
                "__repr__",
                "__getitem__",
                "__contains__",
                "__len__",
                "__bool__",
            )
        ):
            out[name] = value
    return out


def comparable(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_every_public_async_name_has_a_twin_or_is_excluded() -> None:
    for name in hopx_async.__all__:
        if name in EXCLUDED:
            assert not hasattr(hopx_sync, name), f"{name} is async-only"
            continue
        twin = TWINS.get(name, name)
        assert twin in hopx_sync.__all__, f"hopx_sync has no twin of {name}"
        if name not in TWINS:
            assert getattr(hopx_sync, twin) is getattr(hopx_async, name), (
                f"{name} must be re-exported as the same object"
            )
    assert len(hopx_sync.__all__) == len(set(hopx_sync.__all__))
    expected = {TWINS.get(n, n) for n in hopx_async.__all__ if n not in EXCLUDED}
    assert set(hopx_sync.__all__) == expected
    # "@py_builtins"/"@pytest_ar": pytest's assertion rewriting of the installed package, whose
    # distribution registers a pytest plugin (hopx_async.testing): not names of the module's own
    public = {n for n in dir(hopx_sync) if not n.startswith(("_", "@"))}
    assert set(hopx_sync.__all__) == public | {"__version__"} - {"_generated", "_runner"}


def test_the_generators_rules_are_these() -> None:
    gen = load_generator()
    assert set(gen.EXCLUDED) == EXCLUDED
    assert gen.HAND_WRITTEN == ("hopx_sync/_runner.py",), "the runner is the only exception"
    for name, twin in TWINS.items():
        assert gen.sync_name(name) == twin


@pytest.mark.parametrize("async_name", [n for n in TWINS if n[0].isupper()])
def test_class_members_have_the_same_parameters(async_name: str) -> None:
    acls = getattr(hopx_async, async_name)
    scls = getattr(hopx_sync, TWINS[async_name])
    members = public_members(acls)
    assert members, async_name
    for name, avalue in members.items():
        sname = MEMBER_RENAMES.get(name, name)
        assert sname in vars(scls), f"{TWINS[async_name]}.{sname} is missing (regenerate)"
        svalue = vars(scls)[sname]
        if isinstance(avalue, property):
            assert isinstance(svalue, property), f"{sname} must stay a property"
            continue
        assert type(svalue) is type(avalue), f"{sname}: {type(svalue)} vs {type(avalue)}"
        afunc = avalue.__func__ if isinstance(avalue, (classmethod, staticmethod)) else avalue
        sfunc = svalue.__func__ if isinstance(svalue, (classmethod, staticmethod)) else svalue
        assert comparable(inspect.signature(sfunc)) == comparable(inspect.signature(afunc)), (
            f"{TWINS[async_name]}.{sname} has other parameters than {async_name}.{name}"
        )
        assert inspect.getdoc(sfunc) or not inspect.getdoc(afunc), f"{sname} lost its docstring"
        # blocking, never async
        assert not inspect.iscoroutinefunction(sfunc)
        assert not inspect.isasyncgenfunction(sfunc)
    extra = {
        n
        for n in public_members(scls)
        if n not in {MEMBER_RENAMES.get(m, m) for m in members} and not n.startswith("_")
    }
    assert not extra, f"{TWINS[async_name]} has members the async class lacks: {extra}"


def test_the_client_constructor_has_the_same_parameters() -> None:
    assert comparable(inspect.signature(hopx_sync.Hopx.__init__)) == comparable(
        inspect.signature(hopx_async.AsyncHopx.__init__)
    )


def test_functions_have_the_same_parameters() -> None:
    for name, twin in TWINS.items():
        if name[0].isupper():
            continue
        assert comparable(inspect.signature(getattr(hopx_sync, twin))) == comparable(
            inspect.signature(getattr(hopx_async, name))
        )


def test_async_generators_became_iterators_and_coroutines_blocking() -> None:
    for name, twin in TWINS.items():
        if not name[0].isupper():
            continue
        for member, value in vars(getattr(hopx_async, name)).items():
            if inspect.isasyncgenfunction(value) and not member.startswith("_"):
                hint = inspect.signature(
                    getattr(getattr(hopx_sync, twin), member)
                ).return_annotation
                assert "Iterator[" in str(hint), f"{twin}.{member} returns {hint}"


@pytest.fixture
def instances() -> Iterator[Callable[[str], tuple[Any, Any]]]:
    """Pairs (async object, its twin) built without any I/O, to compare instance attributes."""
    runner = _runner.Runner()
    client = hopx_async.AsyncHopx(api_key="k", base_url="http://127.0.0.1:9")
    info = hopx_async.SandboxInfo.from_wire({"id": "sbx_1", "public_host": "http://127.0.0.1:9"})
    sandbox = hopx_async.AsyncSandbox(client, client._control, info)
    objects: dict[str, Any] = {
        "AsyncHopx": client,
        "AsyncSandboxes": client.sandboxes,
        "AsyncSandbox": sandbox,
        "AsyncCommands": sandbox.commands,
        "AsyncFiles": sandbox.files,
        "AsyncEnv": sandbox.env,
        "AsyncBackgroundProcess": sandbox.process("proc_1"),
        "AsyncExecution": hopx_async.AsyncExecution(
            sandbox, "exec_1", callback_url="http://127.0.0.1:9/hook", process_id="proc_1"
        ),
        # a closed connection's stand-in: the terminal only reads its ``closed`` here
        "AsyncTerminal": hopx_async.AsyncTerminal(SimpleNamespace(closed=True), "sbx_1"),  # type: ignore[arg-type]
    }

    def pair(name: str) -> tuple[Any, Any]:
        obj = objects[name]
        return obj, getattr(hopx_sync, TWINS[name])._from_async(obj, runner)

    yield pair
    runner.close()


@pytest.mark.parametrize("async_name", [n for n in TWINS if n[0].isupper()])
def test_public_instance_attributes_have_twins(
    async_name: str, instances: Callable[[str], tuple[Any, Any]]
) -> None:
    obj, twin = instances(async_name)
    for attr, value in vars(obj).items():
        if attr.startswith("_"):
            continue
        assert hasattr(twin, attr), f"{type(twin).__name__}.{attr} is missing"
        expected = TWINS.get(type(value).__name__)
        if expected is not None:
            assert type(getattr(twin, attr)).__name__ == expected
            assert getattr(twin, attr)._async is value
    assert twin == instances(async_name)[1], "twins of one object are equal"
    assert hash(twin) == hash(instances(async_name)[1])
    assert "Async" not in repr(twin)


def test_generated_files_are_current_and_marked() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sync.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rel in ("hopx_sync/_generated.py", "hopx_sync/__init__.py"):
        first = (ROOT / rel).read_text(encoding="utf-8").splitlines()[0]
        assert "generated" in first.lower() and "do not edit" in first.lower()
    assert "do not edit" not in (ROOT / "hopx_sync" / "_runner.py").read_text(encoding="utf-8")


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    gen = load_generator()
    files = gen.generate()
    stale = files["hopx_sync/_generated.py"].replace("def wait_all(", "def wait_al(", 1)
    assert stale != files["hopx_sync/_generated.py"]
    (tmp_path / "hopx_sync").mkdir()
    (tmp_path / "hopx_sync" / "__init__.py").write_text(files["hopx_sync/__init__.py"])
    (tmp_path / "hopx_sync" / "_generated.py").write_text(stale)
    assert gen.main(["--check"], root=tmp_path) == 1
    assert gen.main([], root=tmp_path) == 0
    written = (tmp_path / "hopx_sync" / "_generated.py").read_text()
    assert gen.normalized(written) == gen.normalized(files["hopx_sync/_generated.py"])
    assert gen.main(["--check"], root=tmp_path) == 0


def test_check_needs_no_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--check`` compares code, not layout: it runs where ruff is not installed."""
    gen = load_generator()
    monkeypatch.setattr(gen.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(gen.subprocess, "run", None)  # no tool is started
    assert gen.main(["--check"]) == 0
    text = (ROOT / "hopx_sync" / "_generated.py").read_text(encoding="utf-8")
    assert gen.normalized(text) == gen.normalized(text.replace("\n\n\n", "\n\n"))
    assert gen.normalized(text) != gen.normalized(text.replace("def wait(", "def wai(", 1))


def test_generated_docstrings_read_as_blocking_code() -> None:
    import ast

    text = (ROOT / "hopx_sync" / "_generated.py").read_text(encoding="utf-8")
    tree = ast.parse(text)
    docs = [
        ast.get_docstring(node) or ""
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
    ]
    assert len([d for d in docs if d]) > 30
    for doc in docs:
        for leftover in ("await", "async with", "async for", "(proc.wait())", "loop's", "Async"):
            assert leftover not in doc, f"{leftover!r} in {doc!r}"
    assert "from hopx_async._" not in text, "hopx_sync uses public hopx_async names only"


FAN_OUT = '''
from collections.abc import Callable, Iterable, Sequence

from hopx_async import AsyncSandbox, ProcessResult

Progress = Callable[[int, int, ProcessResult], None]


async def run_many(
    self,
    tasks: Iterable[str],
    *,
    sandboxes: AsyncSandbox | Sequence[AsyncSandbox],
    max_concurrency: int = 8,
    timeout: float | None = None,
    check: bool = False,
    on_progress: Progress | None = None,
) -> list[ProcessResult]:
    """Start every task on the sandboxes and wait for all; see ``await client.wait_all``."""
    return []
'''


def test_a_fan_out_method_with_a_callback_is_mapped(tmp_path: Path) -> None:
    """A method shaped like ``AsyncHopx.run_many``: twins unwrapped, the callback relayed."""
    import ast

    gen = load_generator()
    (tmp_path / "hopx_async_fanout_shape.py").write_text(FAN_OUT)
    spec = importlib.util.spec_from_file_location(
        "hopx_async_fanout_shape", tmp_path / "hopx_async_fanout_shape.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        generator = gen.Generator()
        node = next(
            n for n in generator.tree(spec.name).body if isinstance(n, ast.AsyncFunctionDef)
        )
        call = f"self._async.run_many({generator.call_args(node, spec.name, skip_first=True)})"
        source = gen.define(
            "",
            "run_many",
            generator.signature(node, spec.name),
            ast.get_docstring(node, clean=False),
            generator.body(module.run_many, node, spec.name, call, "self._runner"),
        )
    finally:
        del sys.modules[spec.name]
    ast.parse(source)
    assert "on_progress: Callable[[int, int, ProcessResult], None] | None = None" in (
        ast.unparse(ast.parse(source)).replace("=None", " = None")
    )
    assert "sandboxes: Sandbox | Sequence[Sandbox]" in source
    assert "relay = _runner.Relay()" in source
    assert "on_progress=relay(on_progress)" in source
    assert (
        "sandboxes=sandboxes._async if isinstance(sandboxes, Sandbox) "
        "else [item._async for item in sandboxes]"
    ) in source
    assert "relay=relay" in source
    assert "see ``client.wait_all``" in source
