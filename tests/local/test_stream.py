"""Streamed execution and pushed process output over raw WebSockets (aiohttp's client)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

#: The most bytes the server may hold for one connection (one message of at most 64 KiB of
#: output, JSON-escaped, plus aiohttp's 64 KiB write buffer and the transport's); see
#: docs/local-backend.md. Without backpressure a stalled reader of 50 MB would make it ~50 MB.
BUFFER_BOUND = 1024 * 1024


async def _messages(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out = []
    async for msg in ws:
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        out.append(data)
        if data["type"] in ("complete", "error"):
            break
    return out


def _text(messages: list[dict[str, Any]], kind: str) -> str:
    return "".join(m["data"] for m in messages if m["type"] == kind)


def _root(sbx: Sandbox) -> str:
    parts = urlsplit(sbx.host)
    return f"ws://{parts.netloc}"


async def test_execute_stream_sends_output_result_complete(api: Api, sbx: Sandbox) -> None:
    code = (
        "import sys\n"
        "print('one', flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "print('two €', flush=True)\n"
        "sys.exit(3)\n"
    )
    headers = {"Authorization": f"Bearer {sbx.token}"}
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"type": "execute", "code": code, "timeout": 30})
        messages = await _messages(ws)
    assert _text(messages, "stdout") == "one\ntwo €\n"
    assert _text(messages, "stderr") == "oops\n"
    result = next(m for m in messages if m["type"] == "result")
    assert result["exit_code"] == 3
    assert result["success"] is False
    assert messages[-1]["type"] == "complete"
    assert messages[-1]["success"] is False
    assert all("timestamp" in m for m in messages if m["type"] in ("stdout", "stderr"))


async def test_streams_at_the_root_are_dispatched_by_token(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    async with api.session.ws_connect(_root(sbx) + "/commands/stream", headers=headers) as ws:
        await ws.send_json({"command": "echo $HOPX_X", "env": {"HOPX_X": "x1"}})
        messages = await _messages(ws)
    assert _text(messages, "stdout") == "x1\n"
    assert messages[-2]["type"] == "result"
    assert messages[-2]["exit_code"] == 0
    assert messages[-1] == {"type": "complete", "success": True, "buffered_peak": ANY_INT}


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and other >= 0


ANY_INT: Any = _AnyInt()


@pytest.mark.parametrize("path", ["/execute/stream", "/commands/stream"])
async def test_stream_handshake_needs_a_valid_token(api: Api, sbx: Sandbox, path: str) -> None:
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
    ):
        for url in (_root(sbx) + path, sbx.host + path):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with api.session.ws_connect(url, headers=headers):
                    pass
            assert info.value.status == status


async def test_stream_refuses_a_token_of_another_sandbox(api: Api, sbx: Sandbox) -> None:
    other = await api.create()
    try:
        headers = {"Authorization": f"Bearer {other.token}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers):
                pass
        assert info.value.status == 403
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")


async def test_bad_request_message_gets_an_error_message(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"type": "execute", "timeout": 5})
        messages = await _messages(ws)
    assert messages == [{"type": "error", "error": messages[0]["error"], "code": "INVALID_REQUEST"}]
    assert "'code'" in messages[0]["error"]
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_str("not json")
        messages = await _messages(ws)
    assert messages[0]["type"] == "error"
    assert messages[0]["code"] == "INVALID_REQUEST"


async def test_stream_timeout_ends_with_a_failed_result(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"code": code, "timeout": 1})
        messages = await _messages(ws)
    assert _text(messages, "stdout") == "started\n"
    assert "timed out after 1 seconds" in _text(messages, "stderr")
    result = next(m for m in messages if m["type"] == "result")
    assert result["timed_out"] is True
    assert result["success"] is False
    assert result["exit_code"] != 0


async def test_closing_the_stream_ends_the_process(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    code = "import time\nprint('up', flush=True)\ntime.sleep(60)\n"
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"code": code, "timeout": 120})
        first = await ws.receive_json()
        assert first == {"type": "stdout", "data": "up\n", "timestamp": first["timestamp"]}
    # The process is gone: nothing of the sandbox runs any more (bounded wait).
    for _ in range(200):
        answer = await api.agent(sbx, "GET", "/processes")
        if not [
            p
            for p in answer.body["processes"]
            if "sleep" in p["command"] or "python" in p["command"]
        ]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(answer.body)


async def test_slow_reader_keeps_the_server_buffer_bounded(api: Api, sbx: Sandbox) -> None:
    """A process writes 50 MB while the client reads nothing; then the client reads it all.

    The server holds no more than ``BUFFER_BOUND`` bytes at any time (it reports its peak in
    ``complete``): the output waits in the process's file, not in memory.
    """
    total = 50 * 1024 * 1024
    code = (
        "import sys\n"
        "line = b'x' * 1023 + b'\\n'\n"
        f"for _ in range({total // 1024}):\n"
        "    sys.stdout.buffer.write(line)\n"
        "sys.stdout.flush()\n"
        "open('written', 'w').close()\n"
    )
    headers = {"Authorization": f"Bearer {sbx.token}"}
    async with api.session.ws_connect(sbx.host + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"code": code, "timeout": 300})
        # Read nothing until the process has written everything (a condition, not a delay).
        for _ in range(600):
            check = await api.agent(
                sbx, "POST", "/commands/run", json={"command": "test -f written"}
            )
            if check.body["exit_code"] == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the writer did not finish")
        received = 0
        peak_seen = None
        async for msg in ws:
            data = json.loads(msg.data)
            if data["type"] == "stdout":
                received += len(data["data"])
            elif data["type"] == "complete":
                peak_seen = data["buffered_peak"]
                break
    assert received == total
    assert peak_seen is not None
    assert 0 < peak_seen <= BUFFER_BOUND


async def test_process_stream_pushes_output_from_an_offset(api: Api, sbx: Sandbox) -> None:
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "while not __import__('os').path.exists('go'):\n"
        "    time.sleep(0.02)\n"
        "print('second', flush=True)\n"
        "print('err', file=sys.stderr, flush=True)\n"
    )
    started = await api.background(sbx, code)
    pid = started["process_id"]
    health = await api.agent(sbx, "GET", "/health")
    assert health.body["features"]["output_push"] is True
    headers = {"Authorization": f"Bearer {sbx.token}"}
    url = sbx.host + f"/execute/processes/{pid}/stream?stdout_offset=2"
    async with api.session.ws_connect(url, headers=headers) as ws:
        first = await ws.receive_json()
        assert first["type"] == "stdout"
        assert first["data"] == "rst\n"
        assert first["offset"] == 6
        await api.agent(sbx, "POST", "/commands/run", json={"command": "touch go"})
        messages = [first, *await _messages(ws)]
    assert _text(messages, "stdout") == "rst\nsecond\n"
    assert _text(messages, "stderr") == "err\n"
    result = next(m for m in messages if m["type"] == "result")
    assert result["status"] == "completed"
    assert result["exit_code"] == 0
    assert result["stdout_offset"] == len("first\nsecond\n")


async def test_process_stream_of_unknown_process_is_404(api: Api, sbx: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with api.session.ws_connect(
            sbx.host + "/execute/processes/proc_nope/stream", headers=headers
        ):
            pass
    assert info.value.status == 404


async def test_stream_of_a_paused_sandbox_is_refused(api: Api, sbx: Sandbox) -> None:
    assert (await api.cp("POST", f"/v1/sandboxes/{sbx.id}/pause")).status == 200
    headers = {"Authorization": f"Bearer {sbx.token}"}
    for url in (_root(sbx) + "/execute/stream", sbx.host + "/execute/stream"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with api.session.ws_connect(url, headers=headers):
                pass
        assert info.value.status == 409
    assert (await api.cp("POST", f"/v1/sandboxes/{sbx.id}/resume")).status == 200
    async with api.session.ws_connect(_root(sbx) + "/execute/stream", headers=headers) as ws:
        await ws.send_json({"code": "print('back')"})
        messages = await _messages(ws)
    assert _text(messages, "stdout") == "back\n"


async def test_root_stream_runs_in_the_sandbox_the_token_names(api: Api, sbx: Sandbox) -> None:
    other = await api.create(env_vars={"WHO": "other"})
    try:
        for box, expected in ((sbx, "\n"), (other, "other\n")):
            headers = {"Authorization": f"Bearer {box.token}"}
            async with api.session.ws_connect(
                _root(sbx) + "/commands/stream", headers=headers
            ) as ws:
                await ws.send_json({"command": "echo $WHO"})
                messages = await _messages(ws)
            assert _text(messages, "stdout") == expected
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")
