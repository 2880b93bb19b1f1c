"""Issue 16 part E: API requests follow no redirect. A create answered with a 307/308 (or
301/302/303) pointing to another host must not re-send its body (``env_vars``) there: the
client raises :class:`RedirectError` naming the ``Location`` (two loopback aiohttp servers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hopx_async import APIError, AsyncHopx, RedirectError

pytestmark = pytest.mark.anyio


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[str, str, list[bytes], list[int]]]:
    got: list[bytes] = []
    statuses = [307]

    async def elsewhere(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.json_response({"id": "sbx-evil", "status": "running"})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    other_runner, other_url = await _serve(other)

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=statuses[0], headers={"Location": other_url + request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner, url = await _serve(app)
    yield url, other_url, got, statuses
    await runner.cleanup()
    await other_runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_create_is_not_redirected_to_another_host(
    hosts: tuple[str, str, list[bytes], list[int]], status: int
) -> None:
    url, other_url, got, statuses = hosts
    statuses[0] = status
    async with AsyncHopx(api_key="k", base_url=url) as client:
        with pytest.raises(RedirectError) as err:
            await asyncio.wait_for(
                client.sandboxes.create(template="code-interpreter", env_vars={"SECRET": "s"}),
                10,
            )
    assert got == []
    assert isinstance(err.value, APIError) and err.value.status == status
    assert err.value.location == other_url + "/v1/sandboxes"
    assert other_url in str(err.value)


async def test_get_is_not_redirected_either(
    hosts: tuple[str, str, list[bytes], list[int]],
) -> None:
    url, _, got, statuses = hosts
    statuses[0] = 302
    async with AsyncHopx(api_key="k", base_url=url) as client:
        with pytest.raises(RedirectError):
            await asyncio.wait_for(client.sandboxes.list_templates(), 10)
    assert got == []


async def test_a_websocket_connect_is_not_redirected(
    hosts: tuple[str, str, list[bytes], list[int]],
) -> None:
    """``ws_connect`` has no ``allow_redirects``: the client's session refuses any redirect,
    before the token goes to the new host."""
    from hopx_async import Limits, RetryPolicy, Timeouts
    from hopx_async._transport import Transport

    url, other_url, got, statuses = hosts
    statuses[0] = 307
    transport = Transport(timeouts=Timeouts(), limits=Limits(), retries=RetryPolicy())
    try:
        with pytest.raises(RedirectError) as err:
            await asyncio.wait_for(
                transport.websocket(url + "/commands/stream", headers={"Authorization": "t"}),
                10,
            )
    finally:
        await transport.aclose()
    assert got == []
    assert err.value.status == 307 and err.value.location == other_url + "/commands/stream"
