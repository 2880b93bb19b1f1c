"""Sandbox pagination on a list that says ``has_more`` without a cursor (issue 16, item 13;
docs/wire.md 13.2 C3, note N8).

The ``openapi`` dialect is not merged yet: the fault proxy removes ``next_cursor`` from the
backend's list answer, as the OpenAPI ``SandboxList`` has none.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, HopxError, ValidationError

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


async def test_has_more_without_a_cursor_is_said(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    def openapi_list(key: str, status: int, data: Any) -> tuple[int, Any]:
        if key == "GET /v1/sandboxes" and isinstance(data, dict):
            data.pop("next_cursor", None)
        return status, data

    async with proxied.sandboxes.create("base"), proxied.sandboxes.create("base"):
        proxy.rewrite_answer = openapi_list
        seen: list[str] = []

        async def collect() -> None:
            async for info in proxied.sandboxes.list(page_size=1):
                seen.append(info.id)

        with pytest.raises(HopxError, match="no next_cursor"):
            await collect()
        assert len(seen) == 1
        assert proxy.count("GET", "/v1/sandboxes") == 1, "never re-fetches the first page"


async def test_page_size_past_the_documented_100_is_refused_before_any_request(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    with pytest.raises(ValidationError, match=r"page_size.*at most 100"):
        async for _ in proxied.sandboxes.list(page_size=101):
            pass
    assert proxy.count("GET", "/v1/sandboxes") == 0


async def test_a_small_limit_asks_for_a_page_of_that_size(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    sent: list[str | None] = []
    proxy.on_request = lambda request: sent.append(request.query.get("limit"))
    async with proxied.sandboxes.create("base"):
        sent.clear()
        listed = [info async for info in proxied.sandboxes.list(limit=1)]
    assert len(listed) == 1
    assert sent[0] == "1"
