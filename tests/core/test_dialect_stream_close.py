"""A stream that closes without ``complete`` (issue 16, item 14; docs/wire.md 13.3 A13).

The ``stream_close_without_complete`` knob is not merged yet and the fault proxy does not
carry WebSockets, so a stand-in socket replays the frames a strict server sends and then
closes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest

from hopx_async import NetworkError
from hopx_async._connection import AgentConnection

pytestmark = pytest.mark.anyio


@attrs.define
class _Message:
    data: str
    type: aiohttp.WSMsgType = aiohttp.WSMsgType.TEXT


class _Socket:
    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self.frames = [_Message(json.dumps(f)) for f in frames]
        self.closed = False

    async def send_str(self, text: str) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def __aiter__(self) -> AsyncIterator[_Message]:
        for frame in self.frames:
            yield frame


class _Connection(AgentConnection):
    def __init__(self, frames: list[dict[str, Any]]) -> None:  # no control plane needed
        self.socket = _Socket(frames)

    @property
    def sandbox_id(self) -> str:
        return "sbx_test"

    async def open_websocket(self, path: str, **kw: Any) -> Any:
        return self.socket


async def _kinds(conn: _Connection) -> list[str]:
    return [m["type"] async for m in conn.stream_messages("/execute/stream", {"code": "1"})]


async def test_closed_after_result_ends_normally() -> None:
    conn = _Connection([{"type": "stdout", "data": "x"}, {"type": "result", "exit_code": 0}])
    assert await _kinds(conn) == ["stdout", "result"]
    assert conn.socket.closed


async def test_closed_before_result_is_a_network_error() -> None:
    conn = _Connection([{"type": "stdout", "data": "x"}])
    with pytest.raises(NetworkError, match="ended before it completed"):
        await _kinds(conn)
