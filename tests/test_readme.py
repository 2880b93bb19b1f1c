"""The README's Python blocks: complete programs run against the local backend, and
fragments (which use ``await`` at top level) are at least valid Python inside a coroutine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _is_program(code: str) -> bool:
    try:
        compile(code, "README.md", "exec")
    except SyntaxError:
        return False
    return True


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 4
    assert sum(map(_is_program, BLOCKS)) >= 3


@pytest.mark.parametrize("code", [b for b in BLOCKS if not _is_program(b)])
def test_fragment_is_valid_inside_a_coroutine(code: str) -> None:
    compile("async def _fragment():\n" + textwrap.indent(code, "    "), "README.md", "exec")


@pytest.mark.parametrize("code", [b for b in BLOCKS if _is_program(b)])
def test_program_runs_against_the_local_backend(code: str, backend: Any) -> None:
    env = {**os.environ, "HOPX_BASE_URL": backend.base_url, "HOPX_API_KEY": backend.api_key}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
