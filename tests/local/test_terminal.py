"""The agent's ``/terminal`` WebSocket over raw aiohttp: its messages and its token."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anyio
import pytest

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio


async def _until_exit(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, list[dict[str, Any]]]:
    output, others = [], []
    async for msg in ws:
        data = json.loads(msg.data)
        if data["type"] == "output":
            output.append(data["data"])
        else:
            others.append(data)
            if data["type"] == "exit":
                break
    return "".join(output), others


async def _prompt(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Until the shell wrote something (its prompt): what is typed before an interactive
    shell is up may be lost to its start."""
    async for msg in ws:
        data = json.loads(msg.data)
        if data["type"] == "output" and data["data"].strip():
            return str(data["data"])
    raise AssertionError("the terminal closed before the shell wrote anything")


async def test_terminal_runs_a_shell_on_a_tty(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    with anyio.fail_after(60):  # (a hang would outlive pytest-timeout's alarm in teardown)
        async with api.session.ws_connect(sbx.host + "/terminal", headers=headers) as ws:
            await _prompt(ws)
            await ws.send_json({"type": "resize", "cols": 91, "rows": 17})
            await ws.send_json({"type": "resize", "cols": 0, "rows": 17})  # refused, lives on
            await ws.send_json({"type": "input", "data": "tty -s && pwd && stty size; exit 4\n"})
            output, others = await _until_exit(ws)
    assert "/workspace" in output or sbx.id in output  # /workspace as the box shows it
    assert "17 91" in output
    assert others[0]["type"] == "error" and "'cols'" in others[0]["message"]
    assert others[-1] == {"type": "exit", "code": 4}


async def test_terminal_needs_the_sandbox_token(api: Api, sbx: Sandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with api.session.ws_connect(sbx.host + "/terminal", headers=headers):
                pass
        assert info.value.status == 401
    other = await api.create()
    try:
        headers = {"Authorization": f"Bearer {other.token}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with api.session.ws_connect(sbx.host + "/terminal", headers=headers):
                pass
        assert info.value.status == 403
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")
