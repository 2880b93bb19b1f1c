"""Streamed output over WebSocket: streamed executions, and pushing a background process's output.

Routes (each is a WebSocket upgrade of a GET, authenticated like every agent route):

- ``/execute/stream`` and ``/commands/stream``: the client sends one JSON message
  (``{"type": "execute", "code": ..., "language", "timeout", "workdir", "env"}``, or
  ``"command"`` with optional ``"args"``); the server launches it (in the sandbox's box, like
  ``/execute``) and sends ``{"type": "stdout"|"stderr", "data", "timestamp"}`` messages as
  output appears, then ``{"type": "result", "exit_code", "execution_time", "success",
  "timed_out"}`` and ``{"type": "complete", "success"}``. Closing the connection ends it.
- ``/execute/processes/{id}/stream?stdout_offset=&stderr_offset=``: the output of a
  background process from those byte offsets (each message carries its ``offset``, the
  next byte to read), then ``result`` (status, exit code) and ``complete`` once it ended.

Both are served under ``/sandboxes/{sid}`` and, for the official SDK (which keeps only the
scheme and host of ``public_host``), the first two also at the server's root, where the
sandbox is the one the token names.

Backpressure: output is never queued in memory. Each stream is read from the process's
output file, at most ``CHUNK`` bytes at a time, only after the previous message has been
handed to the connection, and a send waits while the connection's write buffer is full
(aiohttp drains above 64 KiB). A slow reader therefore holds at most about one message plus
the write buffer on the server; the process itself keeps writing to its file. ``complete``
reports ``buffered_peak``, the most bytes this connection ever held (message in hand plus
the transport's write buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ..errors import ApiError, bad_request
from ..runtime.launch import StartSpec
from ..runtime.output import read_range
from ..runtime.supervisor import exit_code_of
from ..service.foreground import AttachedRun
from ..service.render import number
from ..state.records import SandboxRecord, iso
from .agent_requests import authorize, code_spec, command_spec
from .common import state
from .params import (
    parse_body,
    query_int,
)

__all__ = [
    "CHUNK",
    "commands_stream",
    "commands_stream_at_root",
    "execute_stream",
    "execute_stream_at_root",
    "process_stream",
]

#: Bytes of one stream read (and sent) at a time.
CHUNK = 64 * 1024
#: How long the first message (the request) may take to arrive, in seconds.
_FIRST_MESSAGE_TIMEOUT = 30.0
#: A streamed execution's timeout: default and maximum, as for ``/execute``.
_DEFAULT_TIMEOUT = 60.0
_MAX_TIMEOUT = 300.0
#: The longest pause between two looks at the output files, in seconds.
_MAX_IDLE = 0.1
_STREAMS = ("stdout", "stderr")


class _Sender:
    """Sends JSON messages, waiting on a full write buffer, and keeps the buffered peak."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.transport = request.transport
        self.buffered_peak = 0
        #: a ``complete`` frame ends the stream (else it closes after ``result``)
        self.complete = state(request).dialect.stream_complete

    async def send(self, message: Mapping[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        await self.ws.send_str(text)
        held = len(text.encode()) + (
            self.transport.get_write_buffer_size() if self.transport is not None else 0
        )
        self.buffered_peak = max(self.buffered_peak, held)


def _now() -> str:
    return iso(time.time()) or ""


async def _pump(
    sender: _Sender,
    paths: Mapping[str, Path],
    offsets: dict[str, int],
    is_final: Callable[[], bool],
    idle: Callable[[float], Awaitable[None]],
    *,
    with_offsets: bool,
) -> None:
    """Send every byte of the files from ``offsets`` on, until ``is_final()`` and drained."""
    pause = 0.005
    while True:
        final = is_final()
        sent = False
        for stream in _STREAMS:
            text, next_offset, _ = read_range(paths[stream], offsets[stream], CHUNK, final=final)
            if next_offset <= offsets[stream]:
                continue
            offsets[stream] = next_offset
            message: dict[str, Any] = {"type": stream, "data": text, "timestamp": _now()}
            if with_offsets:
                message["offset"] = next_offset
            await sender.send(message)
            sent = True
        if sent:
            pause = 0.005
            continue
        if final:
            return
        await idle(pause)
        pause = min(_MAX_IDLE, pause * 2)


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes the connection."""
    async for _ in ws:
        pass


async def _serve(ws: web.WebSocketResponse, work: Awaitable[None]) -> None:
    """Run ``work`` until it ends or the client goes away (then ``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    closed = asyncio.ensure_future(_until_closed(ws))
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, closed):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, closed, return_exceptions=True)
    if not task.cancelled():
        with contextlib.suppress(ConnectionError):
            task.result()


# -- authentication at the root ------------------------------------------------------------


def _sandbox_of_token(request: web.Request) -> SandboxRecord:
    """At the root there is no sandbox in the path: the token names it."""
    return authorize(request, None)[0]


# -- streamed executions -------------------------------------------------------------------


def _code_spec(request: web.Request, body: Mapping[str, Any]) -> StartSpec:
    return code_spec(request, body, default_timeout=_DEFAULT_TIMEOUT, maximum=_MAX_TIMEOUT)


def _command_spec(request: web.Request, body: Mapping[str, Any]) -> StartSpec:
    return command_spec(request, body, default_timeout=_DEFAULT_TIMEOUT, maximum=_MAX_TIMEOUT)


SpecOf = Callable[[web.Request, Mapping[str, Any]], StartSpec]


async def _first_message(ws: web.WebSocketResponse) -> dict[str, Any]:
    try:
        msg = await ws.receive(timeout=_FIRST_MESSAGE_TIMEOUT)
    except asyncio.TimeoutError:
        raise bad_request(
            f"no request message within {number(_FIRST_MESSAGE_TIMEOUT)} seconds"
        ) from None
    if msg.type == WSMsgType.TEXT:
        return parse_body(str(msg.data).encode())
    if msg.type == WSMsgType.BINARY:
        return parse_body(bytes(msg.data))
    raise ConnectionResetError("the client closed the connection before its request")


async def _run_streamed(
    request: web.Request, sbx: SandboxRecord, spec_of: SpecOf
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    sender = _Sender(ws, request)
    try:
        try:
            spec = spec_of(request, await _first_message(ws))
            async with state(request).foreground.attached(sbx, spec) as attached:
                await _serve(ws, _stream_attached(sender, attached, spec))
        except ApiError as exc:  # after the upgrade an error is a message, not an answer
            body = exc.body(request.headers.get("X-Request-ID", ""))
            await sender.send({"type": "error", **{k: v for k, v in body.items() if v}})
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConnectionError):
                raise
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            await sender.send({"type": "stderr", "data": f"hopx-local: could not start: {exc}\n"})
            await sender.send(
                {"type": "result", "exit_code": code, "execution_time": 0.0, "success": False}
            )
            await sender.send(
                {"type": "complete", "success": False, "buffered_peak": sender.buffered_peak}
            )
    except ConnectionError:
        pass  # the client went away: nothing to tell it
    finally:
        await ws.close()
    return ws


async def _stream_attached(sender: _Sender, attached: AttachedRun, spec: StartSpec) -> None:
    ended = attached.ended

    async def idle(seconds: float) -> None:
        await asyncio.wait({ended}, timeout=seconds)

    paths = {"stdout": attached.stdout, "stderr": attached.stderr}
    await _pump(sender, paths, {"stdout": 0, "stderr": 0}, ended.done, idle, with_offsets=False)
    returncode = ended.result()
    timed_out = attached.run.end_reason == "timeout"
    if timed_out:
        await sender.send(
            {
                "type": "stderr",
                "data": f"hopx-local: execution timed out after {number(spec.timeout)} seconds;"
                " its process group was killed\n",
                "timestamp": _now(),
            }
        )
    success = returncode == 0 and attached.run.end_reason is None
    await sender.send(
        {
            "type": "result",
            "exit_code": exit_code_of(returncode),
            "execution_time": round(time.monotonic() - attached.started, 4),
            "success": success,
            "timed_out": timed_out,
        }
    )
    if sender.complete:  # else: closed after the result frame
        await sender.send(
            {"type": "complete", "success": success, "buffered_peak": sender.buffered_peak}
        )


def _agent_sandbox(request: web.Request) -> SandboxRecord:
    # Under /sandboxes/{sid} the agent's middleware authenticated the request already.
    return state(request).sandboxes.get(request.match_info["sid"])


async def execute_stream(request: web.Request) -> web.WebSocketResponse:
    return await _run_streamed(request, _agent_sandbox(request), _code_spec)


async def commands_stream(request: web.Request) -> web.WebSocketResponse:
    return await _run_streamed(request, _agent_sandbox(request), _command_spec)


async def execute_stream_at_root(request: web.Request) -> web.WebSocketResponse:
    return await _run_streamed(request, _sandbox_of_token(request), _code_spec)


async def commands_stream_at_root(request: web.Request) -> web.WebSocketResponse:
    return await _run_streamed(request, _sandbox_of_token(request), _command_spec)


# -- a background process's output ---------------------------------------------------------


async def process_stream(request: web.Request) -> web.WebSocketResponse:
    """Push a background process's output from the given offsets until it has ended."""
    app_state = state(request)
    sbx = _agent_sandbox(request)
    rec = app_state.processes.get(sbx.id, request.match_info["pid"])
    offsets = {
        stream: query_int(request.query, f"{stream}_offset", minimum=0, maximum=2**62) or 0
        for stream in _STREAMS
    }
    layout = app_state.layout
    paths = {s: layout.output(rec.sandbox_id, rec.process_id, s) for s in _STREAMS}
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    sender = _Sender(ws, request)

    async def idle(seconds: float) -> None:
        await app_state.changes.wait_for_process(rec, seconds, None)

    def is_final() -> bool:
        return rec.finished

    async def work() -> None:
        await _pump(sender, paths, offsets, is_final, idle, with_offsets=True)
        await sender.send(
            {
                "type": "result",
                "process_id": rec.process_id,
                "status": rec.status,
                "exit_code": rec.exit_code,
                "success": rec.status == "completed",
                "stdout_offset": offsets["stdout"],
                "stderr_offset": offsets["stderr"],
            }
        )
        await sender.send(
            {
                "type": "complete",
                "success": rec.status == "completed",
                "buffered_peak": sender.buffered_peak,
            }
        )

    with contextlib.suppress(ConnectionError):
        try:
            await _serve(ws, work())
        finally:
            await ws.close()
    return ws
