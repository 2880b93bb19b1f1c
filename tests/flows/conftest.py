"""The flow suite's fixtures: one local backend per dialect, and a client and sandbox on it.

``dialect_backend`` is parametrised over ``extended``, ``hopx`` and ``openapi`` (narrow a run
with ``-k hopx``); it is module-scoped and uses small limits and no boot delay so that the
suite stays fast. Not an environment variable: the autouse scrub of ``tests/conftest.py``
removes every ``HOPX_*`` variable before each test.

``xfail_on(request, item, reason, *dialects)`` marks the running test as an expected failure
(strict) on those dialects: a flow that a strict dialect breaks because of an SDK bug of
issue 16 that is being fixed. Once fixed, it XPASSes, fails, and the marker is removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, PollPolicy
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import DIALECTS, Dialect

# The strict dialects' limits, small enough to matter, large enough for the flows.
_KNOBS = {
    "boot_seconds": 0.0,
    "control_rate_per_minute": 10_000,
    "agent_rate_per_minute": 10_000,
    "create_rate_per_minute": 1_000,
    "rate_window_seconds": 5.0,
}


@pytest.fixture(scope="module", params=DIALECTS)
def dialect_backend(request: pytest.FixtureRequest) -> Iterator[LocalBackend]:
    name = str(request.param)
    dialect = Dialect.named(name) if name == "extended" else Dialect.named(name, **_KNOBS)
    with LocalBackend.in_thread(dialect=dialect, isolation="none") as backend:
        yield backend


@pytest.fixture
def dialect(dialect_backend: LocalBackend) -> str:
    return dialect_backend.dialect.name


@pytest.fixture
async def client(dialect_backend: LocalBackend) -> AsyncIterator[AsyncHopx]:
    async with AsyncHopx(
        api_key=dialect_backend.api_key,
        base_url=dialect_backend.base_url,
        polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
    ) as c:
        yield c


@pytest.fixture
async def sandbox(client: AsyncHopx) -> AsyncIterator[AsyncSandbox]:
    async with client.sandboxes.create("code-interpreter") as sbx:
        yield sbx


def xfail_on(request: pytest.FixtureRequest, dialect: str, reason: str, *dialects: str) -> None:
    """Expect this test to fail (strictly) on ``dialects``, for the SDK bug ``reason``."""
    if dialect in dialects:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


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
