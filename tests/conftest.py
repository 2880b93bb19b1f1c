"""Fixtures shared by the whole test suite.

- ``anyio_backend``: the project runs its async tests with anyio's pytest plugin on asyncio.
- ``backend``: one embedded local backend (``LocalBackend.in_thread()``) for the session,
  with ``.base_url`` and ``.api_key``.
- ``dialect_backend``: one local backend per dialect, module-scoped and parametrised over
  ``extended``, ``hopx`` and ``openapi`` (a test that requests it runs three times; narrow a
  run with ``-k hopx``). The strict dialects run with ``DIALECT_KNOBS``: no boot delay and
  limits too high to be reached by a flow; a test of a limit or of the boot builds its own
  ``Dialect.named(name, boot_seconds=..., agent_rate_per_minute=...)``. ``dialect`` is the
  running dialect's name; ``dialect_client`` an ``AsyncHopx`` on that backend with fast
  polling; ``dialect_sandbox`` a sandbox created on it (deleted afterwards). The dialect is
  passed explicitly, never through ``HOPX_LOCAL_DIALECT``, which the scrub below removes.
  To expect a failure on one dialect only (an SDK bug of issue 16 being fixed), use
  ``tests.flows.conftest.xfail_on``.
- Every test runs with the ``HOPX_*`` variables of the outer environment removed, so that a
  developer's real credentials can never leak into (or change) a test run.
- The whole session runs with the ``PYTHON*`` variables of the outer environment removed, so
  that the interpreters the tests start (scripts, the ``hopx`` command, servers) behave the
  same on every machine: a CI machine's ``PYTHONUNBUFFERED=1`` must not hide output that is
  still in a buffer on a user's machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, PollPolicy
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import DIALECTS, Dialect

#: The strict dialects' knobs in ``dialect_backend``: small windows, limits no flow reaches.
DIALECT_KNOBS = {
    "boot_seconds": 0.0,
    "control_rate_per_minute": 10_000,
    "agent_rate_per_minute": 10_000,
    "create_rate_per_minute": 1_000,
    "rate_window_seconds": 5.0,
}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _no_outer_python_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("PYTHON"):
                patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _no_outer_hopx_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HOPX_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def backend() -> Iterator[LocalBackend]:
    with LocalBackend.in_thread() as running:
        yield running


@pytest.fixture(scope="module", params=DIALECTS)
def dialect_backend(request: pytest.FixtureRequest) -> Iterator[LocalBackend]:
    name = str(request.param)
    knobs = {} if name == "extended" else DIALECT_KNOBS
    with LocalBackend.in_thread(dialect=Dialect.named(name, **knobs), isolation="none") as running:
        yield running


@pytest.fixture
def dialect(dialect_backend: LocalBackend) -> str:
    return dialect_backend.dialect.name


@pytest.fixture
async def dialect_client(dialect_backend: LocalBackend) -> AsyncIterator[AsyncHopx]:
    async with AsyncHopx(
        api_key=dialect_backend.api_key,
        base_url=dialect_backend.base_url,
        polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
    ) as c:
        yield c


@pytest.fixture
async def dialect_sandbox(dialect_client: AsyncHopx) -> AsyncIterator[AsyncSandbox]:
    async with dialect_client.sandboxes.create("code-interpreter") as sbx:
        yield sbx
