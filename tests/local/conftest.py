"""Fixtures for the local backend's tests: a plain aiohttp client and a fresh sandbox."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.runtime.disk import mounts_under

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


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Unmount the workspace images that servers SIGKILLed by a test left mounted."""
    yield
    for mount in mounts_under(tmp_path_factory.getbasetemp()):
        subprocess.run(["umount", "--lazy", str(mount)], check=False, capture_output=True)
