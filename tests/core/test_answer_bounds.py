"""Issue 16 part E: an answer past ``Limits.max_response_bytes`` raises a typed error, read no
further (small loopback aiohttp servers, bounded in time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hopx_async import AsyncHopx, Limits, NetworkError, ResponseTooLargeError

pytestmark = pytest.mark.anyio


async def _endless(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(b'{"sandboxes": ["')
    try:
        while True:
            await resp.write(b"x" * 65536)
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


async def _huge(request: web.Request) -> web.Response:
    return web.Response(body=b" " * (3 << 20), content_type="application/json")


async def _first(client: AsyncHopx) -> object:
    async for info in client.sandboxes.list():
        return info
    return None


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/sandboxes", _endless)
    app.router.add_get("/v1/templates", _huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_endless_answer_raises_a_typed_error(server: str) -> None:
    async with AsyncHopx(
        api_key="k", base_url=server, limits=Limits(max_response_bytes=1 << 20)
    ) as client:
        with pytest.raises(ResponseTooLargeError) as err:
            await asyncio.wait_for(_first(client), 10)
        assert isinstance(err.value, NetworkError) and err.value.limit == 1 << 20


async def test_answer_past_its_content_length_limit(server: str) -> None:
    async with AsyncHopx(
        api_key="k", base_url=server, limits=Limits(max_response_bytes=1 << 20)
    ) as client:
        with pytest.raises(ResponseTooLargeError):
            await asyncio.wait_for(client.sandboxes.list_templates(), 10)


def test_default_limit() -> None:
    assert Limits().max_response_bytes == 64 << 20
