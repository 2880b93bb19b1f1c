"""Agent tokens are refreshed: once after a 401 for an expired token (the request is then
sent again with the new one), and before use once the client's clock passes the expiry.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx

from .proxy import Fault, FaultProxy, fast_client

pytestmark = pytest.mark.anyio


async def test_expired_token_is_refreshed_once(backend: Any, proxy: FaultProxy) -> None:
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        await sbx.run_code("print(1)")
        tokens: list[str | None] = []
        proxy.on_request = lambda r: tokens.append(r.headers.get("Authorization"))
        expired = {"error": "token expired", "code": "INVALID_TOKEN"}
        proxy.inject(Fault("GET", r"/execute/processes$", 401, expired, times=1))
        assert await sbx.list_processes() == []
        assert proxy.count("POST", "/v1/sandboxes/{sbx}/token/refresh") == 1
        refused, _refresh, retried = tokens
        assert refused and retried and refused != retried, "the retry carries the new token"


async def test_token_is_refreshed_before_it_expires(backend: Any, proxy: FaultProxy) -> None:
    """The client's clock passes the token's expiry: refreshed before use, no 401 needed."""
    import time

    ahead = [0.0]
    async with (
        AsyncHopx(
            api_key=backend.api_key, base_url=proxy.url, clock=lambda: time.time() + ahead[0]
        ) as client,
        client.sandboxes.create("base") as sbx,
    ):
        assert (await sbx.run_code("print(1)")).stdout == "1\n"
        refresh = ("POST", "/v1/sandboxes/{sbx}/token/refresh")
        assert proxy.count(*refresh) == 0
        ahead[0] = 7 * 24 * 3600.0  # a week later: any token has expired
        assert (await sbx.run_code("print(2)")).stdout == "2\n"
        assert proxy.count(*refresh) == 1
        ahead[0] = 0.0
        assert (await sbx.run_code("print(3)")).stdout == "3\n"
        assert proxy.count(*refresh) == 1, "a fresh token is not refreshed again"
        assert proxy.count("POST", "/execute") == 3, "no request was refused on the way"
