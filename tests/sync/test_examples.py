"""The documented examples run unchanged on the sync facade; their async twins in examples/
run to the end and show their results.

The Python blocks of ``tests/fixtures/background-execution.md`` (a copy of the HopX page
"Background") run with ``from hopx_ai import Sandbox`` changed to
``from hopx_sync import Sandbox`` and nothing else, against the local backend named by
``HOPX_BASE_URL``/``HOPX_API_KEY``. They sleep, so every script starts at once and each
test then collects its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "tests" / "fixtures" / "background-execution.md"

#: what the page says each example prints (one regex per line that must appear)
EXPECTED: dict[str, list[str]] = {
    "Starting Background Execution": [r"Process started: proc_\w+", r"Status: (queued|running)"],
    "Checking Process Status": [r"Status: running"] * 5,
    "Process Naming": [r"data-processing: running", r"ml-training: running"],
    "Environment Variables": [r"Process ID: proc_\w+"],
    "Timeout Configuration": [r"Process started with 600s timeout"],
    "Complete Example": [
        r"✅ Background task started: proc_\w+",
        r"Status: running",
        r"✅ Task completed!",
        r"Output:",
        r"Step 1: Generated \d+",
        r"Step 20: Generated \d+",
        r"All done!",
    ],
}
#: what the async versions in examples/ print: each waits for its task and shows how it
#: ended, except the timeout example, which says that it only starts one
ASYNC_EXPECTED: dict[str, list[str]] = {
    "Starting Background Execution": [
        r"Process started: proc_\w+",
        r"Status: (queued|running)",
        r"Status: completed \(exit code 0\)",
        r"Step 1/10",
        r"Step 10/10",
        r"Done!",
    ],
    "Checking Process Status": [r"Status: (queued|running)", r"Status: completed", r"Output: Done"],
    "Process Naming": [
        r"data-processing: (queued|running)",
        r"ml-training: (queued|running)",
        r"data-processing: completed, data ready",
        r"ml-training: completed, model trained",
    ],
    "Environment Variables": [
        r"Process ID: proc_\w+",
        r"Output:",
        r"Using API key: sk-123456\.\.\.",
        r"DEBUG=true",
        r"Task completed",
    ],
    "Timeout Configuration": [
        r"Process started with 600s timeout",
        r"\(only started: leaving this block kills the sandbox and the task with it\)",
    ],
    "Complete Example": EXPECTED["Complete Example"],
}
#: the async versions in examples/, by the section they mirror
ASYNC_EXAMPLES = {
    "Starting Background Execution": "background_basic.py",
    "Checking Process Status": "background_status.py",
    "Process Naming": "background_naming.py",
    "Environment Variables": "background_env.py",
    "Timeout Configuration": "background_timeout.py",
    "Complete Example": "background_complete.py",
}


def documented_examples() -> dict[str, str]:
    """The page's Python blocks, by the heading of their section, import changed."""
    text = PAGE.read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"```python[^\n]*\n(.*?)```", section, flags=re.S)
        for block in blocks:
            code = textwrap.dedent(block)
            assert "from hopx_ai import Sandbox" in code
            out[title] = code.replace(
                "from hopx_ai import Sandbox", "from hopx_sync import Sandbox"
            )
    return out


def test_the_page_has_the_examples_we_expect() -> None:
    assert set(documented_examples()) == set(EXPECTED) == set(ASYNC_EXAMPLES)
    assert set(ASYNC_EXPECTED) == set(ASYNC_EXAMPLES)


def _env(backend: Any | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env["PYTHONIOENCODING"] = "utf-8"
    if backend is not None:
        env["HOPX_BASE_URL"] = backend.base_url
        env["HOPX_API_KEY"] = backend.api_key
    return env


@pytest.fixture(scope="module")
def running(backend: Any) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Every script, started at once: the documented ones, the async ones and the demo."""
    procs: dict[str, subprocess.Popen[str]] = {}

    def start(key: str, args: list[str], env: dict[str, str]) -> None:
        procs[key] = subprocess.Popen(
            [sys.executable, "-W", "error", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    for title, code in documented_examples().items():
        start(f"doc:{title}", ["-c", code], _env(backend))
    for title, name in ASYNC_EXAMPLES.items():
        start(f"async:{title}", [str(ROOT / "examples" / name)], _env(backend))
    start("demo", [str(ROOT / "examples" / "demo.py")], _env(None))
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def outcome(procs: dict[str, subprocess.Popen[str]], key: str) -> tuple[int, str, str]:
    out, err = procs[key].communicate(timeout=100)
    return procs[key].returncode, out, err


def assert_prints(out: str, expected: list[str]) -> None:
    lines = out.splitlines()
    for pattern in set(expected):
        hits = [line for line in lines if re.fullmatch(pattern, line)]
        assert len(hits) >= expected.count(pattern), f"{pattern!r} not printed:\n{out}"


@pytest.mark.parametrize("title", list(EXPECTED))
def test_documented_example_runs_unchanged_on_hopx_sync(
    running: dict[str, subprocess.Popen[str]], title: str
) -> None:
    code, out, err = outcome(running, f"doc:{title}")
    assert code == 0, err
    assert err == ""
    assert_prints(out, EXPECTED[title])


@pytest.mark.parametrize("title", list(ASYNC_EXAMPLES))
def test_async_example_finishes_and_shows_its_result(
    running: dict[str, subprocess.Popen[str]], title: str
) -> None:
    code, out, err = outcome(running, f"async:{title}")
    assert code == 0, err
    assert err == ""
    assert_prints(out, ASYNC_EXPECTED[title])
    lines = out.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if re.fullmatch(p, line))
        for p in ASYNC_EXPECTED[title]
    ]
    if title != "Complete Example":  # (its lines are unordered: a reporter task prints too)
        assert order == sorted(order), f"printed out of order:\n{out}"


def test_demo_runs_on_its_own_embedded_backend(running: dict[str, subprocess.Popen[str]]) -> None:
    code, out, err = outcome(running, "demo")
    assert code == 0, err
    assert "started the embedded local backend" in out
    assert "50/50" in out
    assert re.search(r"^total\s+50\s+48\s+2\b", out, flags=re.M), out
