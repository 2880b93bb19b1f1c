"""The flow suite's fixtures, on ``dialect_backend`` of ``tests/conftest.py``.

``dialect_backend`` (and ``dialect``, ``dialect_client``, ``dialect_sandbox``) live in
``tests/conftest.py``, so that any test directory can run against the three dialects; here
``client`` and ``sandbox`` are their short names for the flows.

Where a dialect cannot offer something (no output in the ``openapi`` process list, no removal
of a process on the service), the flow asserts the clear error or flag instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox
from hopx_async.local import LocalBackend


@pytest.fixture
def client(dialect_client: AsyncHopx) -> AsyncHopx:
    """``dialect_client`` of ``tests/conftest.py``, under the flows' shorter name."""
    return dialect_client


@pytest.fixture
def sandbox(dialect_sandbox: AsyncSandbox) -> AsyncSandbox:
    """``dialect_sandbox`` of ``tests/conftest.py``, under the flows' shorter name."""
    return dialect_sandbox


class Hopx:
    """Runs the installed ``hopx`` against one backend (its URL and key in the environment)."""

    def __init__(self, backend: LocalBackend) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
        env.update(HOPX_BASE_URL=backend.base_url, HOPX_API_KEY=backend.api_key, COLUMNS="120")
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).parent / "hopx"
        return subprocess.run(
            [str(exe), *args], env=self.env, capture_output=True, text=True, timeout=90
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))
