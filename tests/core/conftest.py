"""Fixtures of the async core's tests: clients and sandboxes on the local backend.

(The outer ``HOPX_*`` variables are removed for every test by ``tests/conftest.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, PollPolicy

from .proxy import FaultProxy


@pytest.fixture
async def client(backend: Any) -> AsyncIterator[AsyncHopx]:
    async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as c:
        yield c


@pytest.fixture
async def sandbox(client: AsyncHopx) -> AsyncIterator[AsyncSandbox]:
    async with client.sandboxes.create("code-interpreter") as sbx:
        yield sbx


@pytest.fixture
async def proxy(backend: Any) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(backend.base_url) as p:
        yield p


@pytest.fixture
async def proxied(backend: Any, proxy: FaultProxy) -> AsyncIterator[AsyncHopx]:
    """A client that talks to the backend through the counting, fault-injecting proxy."""
    async with AsyncHopx(
        api_key=backend.api_key,
        base_url=proxy.url,
        polling=PollPolicy(initial_interval=0.02),
    ) as c:
        yield c


@pytest.fixture(params=["extensions", "plain"])
async def any_server(request: Any, backend: Any) -> AsyncIterator[tuple[AsyncSandbox, FaultProxy]]:
    """A sandbox on the local backend with its extensions, and as the real service (none)."""
    async with (
        FaultProxy(backend.base_url, hide_features=request.param == "plain") as proxy,
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        yield sandbox, proxy
