"""Issue 16 part E: a compressed answer that expands past ``Limits.max_response_bytes`` (a
"compression bomb": 256 MiB of zeros in about 256 KiB of gzip) ends in ``ResponseTooLargeError``
while the client holds no more than about the limit (a loopback aiohttp server)."""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hopx_async import AsyncHopx, Limits, ResponseTooLargeError

pytestmark = pytest.mark.anyio

LIMIT = 1 << 20
EXPANDED = 256 << 20


def _gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: a gzip member
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_of_zeros(EXPANDED)


@pytest.fixture
async def server(bomb: bytes) -> AsyncIterator[str]:
    async def templates(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    app = web.Application()
    app.router.add_get("/v1/templates", templates)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_compression_bomb_is_cut_at_the_limit(server: str, bomb: bytes) -> None:
    assert len(bomb) < 2 * LIMIT < EXPANDED
    async with AsyncHopx(
        api_key="k", base_url=server, limits=Limits(max_response_bytes=LIMIT)
    ) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError):
                await asyncio.wait_for(client.sandboxes.list_templates(), 30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # the compressed body as it arrives, and about the limit of expanded text: never the 256 MiB
    assert peak < 16 * LIMIT, f"the client held {peak >> 20} MiB"
