"""Shell commands in a sandbox (``sandbox.commands``), and the WebSocket run both streams use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _validation as validate
from ._agent import Agent
from ._process import AsyncBackgroundProcess, start_process
from ._results import CommandResult, StreamEvent
from ._watcher import Watcher
from ._wire import execution_body

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["AsyncCommands", "stream_events"]


async def stream_events(
    agent: Agent, path: str, body: Mapping[str, Any]
) -> AsyncGenerator[StreamEvent, None]:
    """Run ``body`` over the WebSocket at ``path`` and yield its events as they come (closing
    the iterator closes the connection, which ends the run)."""
    request = {"type": "execute", **body}
    async with contextlib.aclosing(agent.stream_messages(path, request)) as messages:
        async for data in messages:
            yield StreamEvent.from_wire(data)


def _as_bash(body: dict[str, Any]) -> None:
    """The official SDK's form of a command, which the service runs: ``bash -c CMD``, the
    program and its arguments exec'd as given (``command`` alone may not go through a shell).

    >>> body = {"command": "ls | wc -l"}; _as_bash(body); body
    {'command': 'bash', 'args': ['-c', 'ls | wc -l']}
    """
    body["args"] = ["-c", body["command"]]
    body["command"] = "bash"


class AsyncCommands:
    """Shell commands in a sandbox: ``sandbox.commands``."""

    def __init__(self, sandbox: AsyncSandbox, watcher: Watcher) -> None:
        self._sandbox = sandbox
        self._watcher = watcher
        self._agent = watcher.agent

    def __repr__(self) -> str:
        return f"<AsyncCommands of {self._agent.sandbox_id}>"

    @overload
    async def run(
        self,
        command: str,
        *,
        background: Literal[False] = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        command: str,
        *,
        background: Literal[True],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> AsyncBackgroundProcess: ...

    async def run(
        self,
        command: str,
        *,
        background: bool = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> CommandResult | AsyncBackgroundProcess:
        """Run a shell command (sent as ``bash -c CMD``) and return its result.

        ``timeout`` defaults to 30 s. With ``background=True`` it returns at once with an
        :class:`AsyncBackgroundProcess`, and ``timeout`` is the process's lifetime on the
        server (default 300 s). A non-zero exit answered as HTTP 500 with ``exit_code`` and
        the output is a result too.

        >>> result = await sandbox.commands.run("ls -la")  # doctest: +SKIP
        >>> proc = await sandbox.commands.run("make all", background=True,
        ...                                   timeout=600)  # doctest: +SKIP
        """
        if name is not None and not background:
            raise validate.ValidationError(
                "name", "only background commands (background=True) take a name"
            )
        if timeout is None:
            timeout = 300 if background else 30
        body, seconds = execution_body("command", command, None, timeout, env, working_dir, name)
        _as_bash(body)
        if background:
            return await start_process(
                self._sandbox, self._watcher, "/commands/background", body, "bash"
            )
        return CommandResult.from_wire(await self._agent.execute("/commands/run", body, seconds))

    async def stream(
        self,
        command: str,
        *,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run a shell command (sent as ``bash -c CMD``, as :meth:`run` sends it) and yield
        its output as it appears (over a WebSocket).

        Events are ``stdout``/``stderr`` (with ``text``), then ``result`` (``exit_code``)
        and ``complete``. Closing the stream early (``contextlib.aclosing``) ends the command.

        >>> async for event in sandbox.commands.stream("make all"):  # doctest: +SKIP
        ...     if event.is_output:
        ...         print(event.text, end="")
        """
        body, _ = execution_body("command", command, None, timeout, env, working_dir, sync=True)
        _as_bash(body)
        async with contextlib.aclosing(stream_events(self._agent, "/commands/stream", body)) as run:
            async for event in run:
                yield event
