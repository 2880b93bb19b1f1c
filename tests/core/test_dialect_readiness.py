"""Readiness after create waits out a booting agent's 404, 401 and 502 (issue 16, item 11;
docs/wire.md 13.3 A1, 13.4 X4).

The strict dialects' ``boot_seconds`` is not merged yet: the fault proxy answers the boot
answers (plain text, as a gateway would) on the agent's ``/health``.
"""

from __future__ import annotations

import pytest

from hopx_async import AsyncHopx

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


async def test_boot_answers_are_waited_out(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    proxy.inject(Fault("GET", r"/health$", 404, text="404 page not found"))
    proxy.inject(Fault("GET", r"/health$", 401, text="Unauthorized"))
    proxy.inject(Fault("GET", r"/health$", 502, text="Bad Gateway", times=2))
    proxy.inject(Fault("GET", r"/health$", 404, text="404 page not found"))
    async with proxied.sandboxes.create("base") as sbx:
        assert (await sbx.run_code("print(1)")).stdout == "1\n"
        assert proxy.count("GET", "/health") >= 6
        assert proxy.count("POST", "/v1/sandboxes/{sbx}/token/refresh") == 0, (
            "a 401 during readiness is not a token problem"
        )
