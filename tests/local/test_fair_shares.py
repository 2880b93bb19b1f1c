"""Fair shares: one sandbox's token cannot take the server's connections with idle streams,
and a webhook receiver that never answers cannot delay another sandbox's delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, eventually
from .receiver import Receiver

pytestmark = pytest.mark.anyio

STREAMS = 80  # past one sandbox's share (64 at the default cap of 1,024)


async def _open_stream(
    session: aiohttp.ClientSession, sbx: Sandbox, process_id: str
) -> aiohttp.ClientWebSocketResponse | int:
    url = sbx.host.replace("http://", "ws://") + f"/execute/processes/{process_id}/stream"
    headers = {"Authorization": f"Bearer {sbx.token}"}
    try:
        return await session.ws_connect(url, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_one_sandbox_cannot_hold_every_connection(tmp_path: Path) -> None:
    async with LocalBackend(tmp_path) as backend, aiohttp.ClientSession() as session:
        api = Api(session, backend.base_url, backend.api_key)
        greedy, other = await api.create(), await api.create()
        quiet = await api.command(greedy, "sleep 120")  # its stream stays open, idle
        opened = [await _open_stream(session, greedy, quiet["process_id"]) for _ in range(STREAMS)]
        try:
            held = [ws for ws in opened if not isinstance(ws, int)]
            refused = [status for status in opened if isinstance(status, int)]
            assert 0 < len(held) < STREAMS
            assert set(refused) == {429}, refused
            assert len(held) + len(refused) == STREAMS
            # the same token over the cap again: the documented body
            over = await api.agent(
                greedy,
                "GET",
                f"/execute/processes/{quiet['process_id']}/stream",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            )
            body = over.expect_error(429, "RESOURCE_LIMIT_ERROR")
            assert body["retry_after"] == 1
            # everybody else keeps answering
            health = await api.raw("GET", backend.base_url + "/health")
            assert health.status == 200
            assert (await api.cp("GET", "/v1/sandboxes")).status == 200
            ran = await api.agent(other, "POST", "/commands/run", json={"command": "echo ok"})
            assert ran.status == 200 and ran.body["stdout"] == "ok\n", ran.body
            theirs = await api.command(other, "sleep 120")
            stream = await _open_stream(session, other, theirs["process_id"])
            assert not isinstance(stream, int), f"another sandbox's stream answered {stream}"
            await stream.close()
        finally:
            for ws in opened:
                if not isinstance(ws, int):
                    await ws.close()
        # the share is given back as streams close
        again = await _open_stream(session, greedy, quiet["process_id"])
        assert not isinstance(again, int), again
        await again.close()


@contextlib.asynccontextmanager
async def _black_hole() -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A receiver that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", held
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_black_hole_receiver_does_not_delay_another_sandbox(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.callback_timeout = 120.0  # the black hole's attempts stay pending meanwhile
    async with (
        backend,
        aiohttp.ClientSession() as session,
        _black_hole() as (hole, held),
        Receiver() as good,
    ):
        api = Api(session, backend.base_url, backend.api_key)
        noisy, quiet = await api.create(), await api.create()
        for _ in range(24):  # more than the old shared pool of 16
            body = {"code": "print(1)", "callback_url": hole + "/hook"}
            assert (await api.agent(noisy, "POST", "/execute/async", json=body)).status == 200
        assert await eventually(lambda: len(held) == 4), len(held)  # its own slots only
        body = {"code": "print('quiet')", "callback_url": good.url + "/hook"}
        sent = await api.agent(quiet, "POST", "/execute/async", json=body)
        assert sent.status == 200
        (hit,) = await good.hits_to("/hook", 1)
        assert b"quiet" in hit.body
        # the black hole's deliveries are all still pending, and it still has 4 attempts
        pending = sorted((tmp_path / "webhooks").glob("*.json"))
        assert len(pending) == 24
        assert len(held) == 4
        assert all(not w.is_closing() for w in held)
