"""``/commands/*`` in the official SDK's form, and a non-zero exit answered 500 (issue 16,
item 5; docs/wire.md 13.3 A7, A8, notes N4, N5).

The strict dialects are not merged yet: the fault proxy records the body the SDK sent and
rewrites the backend's answer into the documented 500 with ``{stdout, stderr, exit_code}``.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, CommandResult

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


async def test_commands_are_sent_as_bash_c(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    async with proxied.sandboxes.create("base") as sbx:
        result = await sbx.commands.run("echo $((1+1)) | cat", working_dir="/workspace")
        assert isinstance(result, CommandResult) and result.stdout == "2\n"
        sent = proxy.bodies["POST /commands/run"][0]
        assert sent["command"] == "bash" and sent["args"] == ["-c", "echo $((1+1)) | cat"]
        assert sent["workdir"] == "/workspace"
        proc = await sbx.commands.run("echo bg", background=True)
        assert (await proc.wait(timeout=10)).stdout == "bg\n"
        assert proxy.bodies["POST /commands/background"][0]["args"] == ["-c", "echo bg"]


async def test_a_non_zero_exit_answered_500_is_a_result(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    def as_documented(key: str, status: int, data: Any) -> tuple[int, Any]:
        if key == "POST /commands/run" and data.get("exit_code"):
            keep = ("stdout", "stderr", "exit_code")
            return 500, {k: data[k] for k in keep}
        return status, data

    proxy.rewrite_answer = as_documented
    async with proxied.sandboxes.create("base") as sbx:
        result = await sbx.commands.run("echo out; echo err >&2; exit 3")
        assert isinstance(result, CommandResult)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert not result.ok
        assert proxy.count("POST", "/commands/run") == 1, "never retried"
