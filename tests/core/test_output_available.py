"""Issue 16 item 2: a result never passes missing output off as the output.

The ``openapi`` dialect is not merged yet: the fault proxy's ``strip_output`` mode stands in
for it (process records without ``stdout``/``stderr``, as the OpenAPI ``ProcessInfo``).
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, OutputUnavailableError

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


async def test_result_without_output_fields_says_so(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True, strip_output=True) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("print('x')")
        with pytest.raises(OutputUnavailableError) as err:
            _ = [chunk async for chunk in proc.output()]
        assert err.value.process_id == proc.id
        result = await proc.wait(timeout=30)
        assert result.status == "completed" and result.exit_code == 0
        assert result.output_available is False
        assert result.get("stdout", "") == ""  # the docs' dict access keeps working


async def test_result_with_output_fields(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("print('x')")
        result = await proc.wait(timeout=30)
        assert result.output_available is True and result.stdout == "x\n"
        assert (result.stdout_truncated, result.stderr_truncated) == (False, False)
