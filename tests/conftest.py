"""Fixtures shared by the whole test suite.

- ``anyio_backend``: the project runs its async tests with anyio's pytest plugin on asyncio.
- ``backend``: one embedded local backend (``LocalBackend.in_thread()``) for the session,
  with ``.base_url`` and ``.api_key``.
- Every test runs with the ``HOPX_*`` variables of the outer environment removed, so that a
  developer's real credentials can never leak into (or change) a test run.
- The whole session runs with the ``PYTHON*`` variables of the outer environment removed, so
  that the interpreters the tests start (scripts, the ``hopx`` command, servers) behave the
  same on every machine: a CI machine's ``PYTHONUNBUFFERED=1`` must not hide output that is
  still in a buffer on a user's machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hopx_async.local import LocalBackend


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
