"""Every code block of the documentation site (``docs/``, generated sections included) runs
against a local backend (the ``hopx_backend`` fixture of the project's own pytest plugin).

How a block runs depends on its fence and on an optional marker on the line before it:

- ``python`` that compiles as a module: a complete program, run as a script with
  ``HOPX_BASE_URL`` and ``HOPX_API_KEY`` set to the backend;
- other ``python`` (``await`` at top level): a fragment, run inside a coroutine that provides
  ``client`` (an ``AsyncHopx``), ``sandbox`` (a fresh ``code-interpreter`` sandbox), ``proc`` (a
  finished background process of it that printed ``hello``), ``SECRET`` and every public name
  of ``hopx_async``;
- ``bash``/``sh``: run by ``bash -euo pipefail`` with the same environment, the venv's
  commands first on ``PATH``, in a temporary directory (also ``HOME``) holding ``examples/``;
- ``json``: parsed;
- no language, or ``text``: shown output or a layout, not code (nothing to run);
- ``<!-- docs-test: pytest -->``: a test file, run by pytest in a subprocess with nothing but
  the installed package (the plugin gives it its fixtures);
- ``<!-- docs-test: skip reason=... -->``: not run, and the reason must be given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import hopx_async
from hopx_async import AsyncHopx, AsyncSandbox

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
import docs_hooks  # noqa: E402

FENCE = re.compile(
    r"^(?:<!-- docs-test: (?P<marker>[^>]*?) -->\n)?```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$",
    re.S | re.M,
)


class Block(NamedTuple):
    page: str
    line: int
    lang: str
    marker: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks() -> list[Block]:
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        text = docs_hooks.expand(path.read_text(encoding="utf-8"))
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("lang")) + 1
            page = str(path.relative_to(DOCS))
            found.append(Block(page, line, match["lang"], match["marker"] or "", match["code"]))
    return found


BLOCKS = _blocks()
# the official SDK (in the migration guide) imports deprecated parts of websockets and leaves
# its sockets to the garbage collector: its programs run without those two warnings as errors
OFFICIAL_SDK_WARNINGS = [
    "-W",
    "ignore:websockets:DeprecationWarning",
    "-W",
    "ignore::ResourceWarning",
]


def _is_program(code: str) -> bool:
    try:
        compile(code, "<docs>", "exec")
    except SyntaxError:
        return False
    return True


def _kind(block: Block) -> str:
    if block.marker.startswith("skip"):
        return "skip"
    if block.marker == "pytest":
        return "pytest"
    assert not block.marker, f"{block.id}: unknown docs-test marker {block.marker!r}"
    if block.lang == "python":
        return "program" if _is_program(block.code) else "fragment"
    if block.lang in ("bash", "sh"):
        return "bash"
    if block.lang in ("json", "text", ""):
        return {"json": "json"}.get(block.lang, "display")
    raise AssertionError(f"{block.id}: a ```{block.lang} block must be run or marked to skip")


def _of(kind: str) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in BLOCKS if _kind(b) == kind]


def _env(backend: Any, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env.update(
        HOPX_BASE_URL=backend.base_url,
        HOPX_API_KEY=backend.api_key,
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
    )
    return env


def test_the_site_has_code_to_run() -> None:
    kinds = [_kind(b) for b in BLOCKS]
    assert len(BLOCKS) >= 30
    for kind in ("program", "fragment", "bash", "pytest"):
        assert kind in kinds


@pytest.mark.parametrize("block", _of("skip"))
def test_a_skipped_block_gives_its_reason(block: Block) -> None:
    match = re.fullmatch(r"skip reason=(.+)", block.marker)
    assert match and match[1].strip(), f"{block.id}: a skipped block must say why"


@pytest.mark.parametrize("block", _of("json"))
def test_json_block_parses(block: Block) -> None:
    json.loads(block.code)


@pytest.mark.parametrize("block", _of("program"))
def test_program_runs(block: Block, hopx_backend: Any, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            *(OFFICIAL_SDK_WARNINGS if "hopx_ai" in block.code else []),
            "-c",
            block.code,
        ],
        env=_env(hopx_backend, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"
    assert done.stderr == "", block.id


@pytest.fixture
async def harness(hopx_backend: Any) -> AsyncIterator[dict[str, Any]]:
    async with AsyncHopx(api_key=hopx_backend.api_key, base_url=hopx_backend.base_url) as client:
        sandbox: AsyncSandbox
        async with client.sandboxes.create("code-interpreter") as sandbox:
            proc = await sandbox.run_code_background("print('hello')")
            await proc.wait(timeout=30, check=True)
            names = {name: getattr(hopx_async, name) for name in hopx_async.__all__}
            yield {**names, "client": client, "sandbox": sandbox, "proc": proc, "SECRET": "s3"}


@pytest.mark.anyio
@pytest.mark.parametrize("block", _of("fragment"))
async def test_fragment_runs(block: Block, harness: dict[str, Any]) -> None:
    source = "async def _fragment():\n" + textwrap.indent(block.code, "    ")
    exec(compile(source, block.id, "exec"), harness)
    await harness["_fragment"]()


@pytest.mark.parametrize("block", _of("bash"))
def test_bash_block_runs(block: Block, hopx_backend: Any, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        env=_env(hopx_backend, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"
    if (tmp_path / ".hopx-local").exists():  # a background server a block left running
        subprocess.run(
            [BIN / "hopx", "local", "stop", "--state-dir", ".hopx-local"],
            cwd=tmp_path,
            env=_env(hopx_backend, tmp_path),
            capture_output=True,
            timeout=30,
            check=False,
        )


@pytest.mark.parametrize("block", _of("pytest"))
def test_test_file_passes(block: Block, tmp_path: Path) -> None:
    (tmp_path / "test_example.py").write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPX_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    mkdocs = shutil.which("mkdocs", path=str(BIN))
    assert mkdocs is not None
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
