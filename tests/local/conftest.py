"""Fixtures for the local backend's tests: a plain aiohttp client and a fresh sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox


@pytest.fixture
async def api(backend: LocalBackend) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, backend.base_url, backend.api_key)


@pytest.fixture
async def sbx(api: Api) -> AsyncIterator[Sandbox]:
    sandbox = await api.create()
    yield sandbox
    await api.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")
