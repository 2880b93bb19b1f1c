"""Webhook executions answered without a ``process_id`` (issue 16, item 14; docs/wire.md
13.3 A14).

The ``hopx`` dialect is not merged yet: the fault proxy removes ``process_id`` from the
``/execute/async`` answer, and for the second test the execution from the process list.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, HopxError

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


def documented_answer(key: str, status: int, data: Any) -> tuple[int, Any]:
    if key == "POST /execute/async":
        data.pop("process_id", None)
    return status, data


async def test_wait_finds_the_execution_by_its_id(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    proxy.rewrite_answer = documented_answer
    async with proxied.sandboxes.create("base") as sbx:
        execution = await sbx.run_code_async("print(7)", callback_url="http://127.0.0.1:9/hook")
        assert execution.process_id is None
        assert (await execution.wait(timeout=10)).stdout == "7\n"


async def test_wait_without_a_listed_execution_fails_clearly(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    def unlisted(key: str, status: int, data: Any) -> tuple[int, Any]:
        status, data = documented_answer(key, status, data)
        if key == "GET /execute/processes" and isinstance(data, dict):
            data["processes"] = []
        return status, data

    proxy.rewrite_answer = unlisted
    async with proxied.sandboxes.create("base") as sbx:
        execution = await sbx.run_code_async("print(7)", callback_url="http://127.0.0.1:9/hook")
        with pytest.raises(HopxError, match="callback URL"):
            await execution.wait(timeout=10)
