"""Working directories on servers that read one key only, or none (issue 16, item 4;
docs/wire.md 13.3 A2, A3, note N1).

The strict dialects are not merged yet: the fault proxy drops the fields the ``openapi``
dialect ignores (``working_dir`` everywhere; both keys for background code) before the
request reaches the lenient local backend.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, ValidationError

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


def openapi_fields(key: str, body: Any) -> Any:
    body = {k: v for k, v in body.items() if k != "working_dir"}
    if key == "POST /execute/background":
        body.pop("workdir", None)
    return body


async def test_run_code_sends_workdir_too(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    proxy.rewrite_request = openapi_fields
    async with proxied.sandboxes.create("base") as sbx:
        await sbx.commands.run("mkdir -p /workspace/sub")
        result = await sbx.run_code("import os; print(os.getcwd())", working_dir="/workspace/sub")
        assert result.stdout == "/workspace/sub\n"


async def test_background_bash_gets_a_cd(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    proxy.hide_features = True  # as on the service: no background_workdir advertised
    proxy.rewrite_request = openapi_fields
    async with proxied.sandboxes.create("base") as sbx:
        await sbx.commands.run("mkdir -p '/workspace/s b'")
        proc = await sbx.run_code_background("pwd", language="bash", working_dir="/workspace/s b")
        assert (await proc.wait(timeout=10)).stdout == "/workspace/s b\n"
        missing = await sbx.run_code_background("pwd", language="bash", working_dir="/nope")
        assert (await missing.wait(timeout=10)).exit_code == 1, "a failed cd never runs the code"


async def test_background_python_with_a_directory_is_refused(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    proxy.hide_features = True  # as on the service: no background_workdir advertised
    async with proxied.sandboxes.create("base") as sbx:
        with pytest.raises(ValidationError) as info:
            await sbx.run_code_background("print(1)", working_dir="/workspace/sub")
        assert info.value.argument == "working_dir"
        assert "background=True" in str(info.value)
        assert proxy.count("POST", "/execute/background") == 0
