"""Sandbox pagination on a list that says ``has_more`` without a cursor (issue 16, item 13;
docs/wire.md 13.2 C3, note N8).

The ``openapi`` dialect is not merged yet: the fault proxy removes ``next_cursor`` from the
backend's list answer, as the OpenAPI ``SandboxList`` has none.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, HopxError

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
