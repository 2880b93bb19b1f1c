"""An interactive terminal over WebSocket: ``GET /terminal`` of the agent.

The server opens a pseudo-terminal, starts an interactive shell (``bash -i``, else
``sh -i``) in ``/workspace`` with the sandbox's environment, in the sandbox's box, on the
pty's slave (its stdin, stdout, stderr and controlling terminal), and relays:

- client to server: ``{"type": "input", "data": TEXT}`` (written to the terminal) and
  ``{"type": "resize", "cols": N, "rows": N}`` (the terminal's size, ``TIOCSWINSZ``: the
  shell's foreground job gets ``SIGWINCH``);
- server to client: ``{"type": "output", "data": TEXT}`` as the terminal writes, then
  ``{"type": "exit", "code": N}`` once the shell has ended, and the server closes;
  ``{"type": "error", "message": TEXT}`` for a message it cannot take.

Closing the connection hangs the terminal up and ends the shell's process group. At most
one chunk of output (``CHUNK`` bytes) is held at a time, and input is written before the
next message is read, so a slow side holds the other back rather than filling memory. A
terminal counts against the sandbox's share of WebSocket streams.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import os
import struct
import termios
from typing import Any

from aiohttp import WSMsgType, web

from ..errors import ApiError
from ..runtime.supervisor import exit_code_of
from .common import state

__all__ = ["CHUNK", "terminal"]

#: Bytes read from the terminal (and sent) at a time.
CHUNK = 16 * 1024
#: The largest message the client may send.
_MAX_MESSAGE = 256 * 1024
#: The shell lives as long as the sandbox and the connection.
_LIFETIME = 7 * 24 * 3600.0
#: After the shell exits: how long output still in the terminal may take to arrive.
_DRAIN_SECONDS = 0.5


def _set_size(master: int, cols: int, rows: int) -> None:
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _wait_fd(master: int, *, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def done() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(master, done)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(master)


async def _write_all(master: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(master, view) :]
        except BlockingIOError:
            await _wait_fd(master, write=True)


async def _pty_to_ws(master: int, ws: web.WebSocketResponse) -> None:
    """Send what the terminal writes, until no process holds it open any more."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        try:
            data = os.read(master, CHUNK)
        except BlockingIOError:
            await _wait_fd(master)
            continue
        except OSError:  # EIO: every slave descriptor is closed
            data = b""
        text = decoder.decode(data, final=not data)
        if text:
            await ws.send_str(json.dumps({"type": "output", "data": text}))
        if not data:
            return


def _number(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10000:
        raise ValueError(f"'{key}' must be an integer from 1 to 10000, got {value!r}")
    return value


async def _ws_to_pty(master: int, ws: web.WebSocketResponse) -> None:
    """Take the client's messages until it closes the connection."""
    async for msg in ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        try:
            message = json.loads(msg.data)
            if not isinstance(message, dict):
                raise ValueError("a message must be a JSON object")
            kind = message.get("type")
            if kind == "input":
                data = message.get("data")
                if not isinstance(data, str):
                    raise ValueError("'data' of an input message must be a string")
                await _write_all(master, data.encode())
            elif kind == "resize":
                _set_size(master, _number(message, "cols"), _number(message, "rows"))
            else:
                raise ValueError(f"'type' must be 'input' or 'resize', got {kind!r}")
        except ValueError as exc:
            await ws.send_str(json.dumps({"type": "error", "message": str(exc)}))


async def terminal(request: web.Request) -> web.WebSocketResponse:
    """``GET /terminal`` (a WebSocket upgrade), authenticated like every agent route."""
    app_state = state(request)
    sbx = app_state.sandboxes.get(request.match_info["sid"])
    if sbx.status != "running":
        raise ApiError(409, "CONFLICT", f"sandbox {sbx.id} is {sbx.status}")
    launcher = app_state.launcher
    env = launcher.process_env(sbx.id, sbx.env_vars, {})
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        _set_size(master, 80, 24)
        run = await launcher.launch_terminal(sbx.id, slave, env=env, internet=sbx.internet_access)
    except OSError as exc:
        os.close(master)
        raise ApiError(500, "INTERNAL_ERROR", f"the shell could not start: {exc}") from None
    finally:
        os.close(slave)
    runs = app_state.foreground.runs.setdefault(sbx.id, set())
    runs.add(run)
    supervisor = launcher.supervisor
    ended = asyncio.ensure_future(supervisor.watch(run, _LIFETIME))
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=_MAX_MESSAGE)
    try:
        await ws.prepare(request)
        await _relay(master, ws, ended)
    except ConnectionError:
        pass  # the client went away
    finally:
        if not ended.done():
            run.end_reason = "killed"
            supervisor.terminate_soon(run)
        os.close(master)  # hangs the terminal up
        with contextlib.suppress(Exception):
            await asyncio.shield(ended)
        runs.discard(run)
        run.done.set()
        await ws.close()
    return ws


async def _relay(master: int, ws: web.WebSocketResponse, ended: asyncio.Future[int]) -> None:
    output = asyncio.ensure_future(_pty_to_ws(master, ws))
    reading = asyncio.ensure_future(_ws_to_pty(master, ws))
    tasks = {output, reading}
    try:
        waits: set[asyncio.Future[Any]] = {ended, reading}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if ended.done():
            # What the shell wrote last is still in the terminal: send it (what it left
            # running in the background may hold the terminal open: wait a moment only).
            await asyncio.wait({output}, timeout=_DRAIN_SECONDS)
            if not output.done():
                output.cancel()
            await asyncio.gather(output, return_exceptions=True)
            await ws.send_str(json.dumps({"type": "exit", "code": exit_code_of(ended.result())}))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
