"""AsyncTerminal: an interactive shell in a sandbox, over the agent's ``/terminal`` WebSocket.

Messages (see docs/wire.md): ``{"type": "input", "data"}`` and ``{"type": "resize", "cols",
"rows"}`` go out; ``{"type": "output", "data"}`` and, once the shell has ended,
``{"type": "exit", "code"}`` come in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from . import _validation as validate
from ._errors import HopxError, NetworkError

if TYPE_CHECKING:
    from ._agent import Agent

__all__ = ["AsyncTerminal", "open_terminal"]

#: The largest terminal side, in columns or rows.
MAX_SIDE = 10000


def _size(cols: Any, rows: Any) -> tuple[int, int]:
    return (
        validate.positive_int("cols", cols, maximum=MAX_SIDE),
        validate.positive_int("rows", rows, maximum=MAX_SIDE),
    )


async def open_terminal(agent: Agent, cols: int, rows: int) -> AsyncTerminal:
    """Open the sandbox's terminal at ``cols`` x ``rows`` (checked before any I/O)."""
    size = _size(cols, rows)
    ws = await agent.open_websocket("/terminal")
    terminal = AsyncTerminal(ws, agent.sandbox_id)
    try:
        await terminal.resize(*size)
    except BaseException:
        await terminal.aclose()
        raise
    return terminal


class AsyncTerminal:
    """An interactive shell (``bash -i``, else ``sh -i``) in ``/workspace`` of a sandbox,
    on a pseudo-terminal. Open it with :meth:`AsyncSandbox.terminal`.

    Read what it writes with :meth:`output` (one reader at a time), type with :meth:`send`;
    once the shell has ended, :attr:`exit_code` is its exit status. Leaving the block closes
    the connection, which ends the shell.

    >>> async with sandbox.terminal(cols=100, rows=30) as term:  # doctest: +SKIP
    ...     await term.send("echo $((6*7)); exit 3\\n")
    ...     async for text in term.output():
    ...         print(text, end="")
    ...     print(term.exit_code)
    3
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool], sandbox_id: str) -> None:
        self._ws = ws
        self._sandbox_id = sandbox_id
        self._exit_code: int | None = None

    def __repr__(self) -> str:
        state = "closed" if self._ws.closed else "open"
        return f"AsyncTerminal(sandbox={self._sandbox_id!r}, {state}, exit_code={self._exit_code})"

    @property
    def exit_code(self) -> int | None:
        """The shell's exit status once it has ended (None until then)."""
        return self._exit_code

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._ws.send_str(json.dumps(message))
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise NetworkError(f"the terminal of sandbox {self._sandbox_id}: {exc}") from exc

    async def send(self, data: str) -> None:
        """Type ``data`` into the terminal (``"\\x03"`` is Ctrl-C, ``"\\x04"`` Ctrl-D).

        >>> await term.send("ls\\n")  # doctest: +SKIP
        """
        if not isinstance(data, str):
            raise TypeError(f"data must be a str, got {type(data).__name__}")
        await self._send({"type": "input", "data": data})

    async def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (each from 1 to 10000); the shell's job sees SIGWINCH.

        >>> await term.resize(120, 40)  # doctest: +SKIP
        """
        size = _size(cols, rows)
        await self._send({"type": "resize", "cols": size[0], "rows": size[1]})

    async def output(self) -> AsyncIterator[str]:
        """Yield what the terminal writes, until the shell has ended (then
        :attr:`exit_code` is set). Raises :class:`NetworkError` when the connection is
        lost before the end.

        >>> async for text in term.output():  # doctest: +SKIP
        ...     print(text, end="")
        """
        async for msg in self._ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "output" and isinstance(data.get("data"), str):
                yield data["data"]
            elif kind == "exit":
                code = data.get("code")
                self._exit_code = code if isinstance(code, int) else -1
                return
            elif kind == "error":
                raise HopxError(
                    f"the terminal of sandbox {self._sandbox_id}: {data.get('message')}"
                )
        if self._exit_code is None:
            raise NetworkError(
                f"the terminal of sandbox {self._sandbox_id} closed before the shell ended"
            )

    async def aclose(self) -> None:
        """Close the connection (which ends the shell if it still runs)."""
        await self._ws.close()

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
