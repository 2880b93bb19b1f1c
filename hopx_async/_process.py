"""The background-process handle: status, wait, kill, output and the full result.

A handle is made with its sandbox's watcher (:mod:`._watcher`) and holds no polling of its
own: ``wait()`` registers with that watcher, which coalesces the polls of every waiter of the
sandbox and keeps the sandbox's live handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from . import _validation as validate
from ._agent import Agent
from ._connection import PAUSE_ERRORS
from ._ending import confirm_ended, lost, sandbox_gone, within
from ._errors import (
    APIError,
    ConflictError,
    HopxError,
    NetworkError,
    OutputUnavailableError,
    ProcessFailedError,
    ProcessNotFoundError,
    SandboxLostError,
    SandboxNotFoundError,
    WaitTimeoutError,
)
from ._keepalive import keep_alive as keep
from ._models import ProcessInfo, ProcessResult, ProcessStatus
from ._output import KeptOutput, OutputCursor, TailFollower, pushed_chunk, status_only
from ._results import OutputChunk
from ._watcher import Watcher
from ._wire import segment

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["AsyncBackgroundProcess", "handle_for", "start_process"]


class AsyncBackgroundProcess:
    """A handle on one background process; returned by ``run_code_background()``.

    >>> proc = await sandbox.run_code_background("print('hi')", name="greet")  # doctest: +SKIP
    >>> result = await proc.wait(timeout=60)  # doctest: +SKIP
    >>> result.stdout  # doctest: +SKIP
    'hi\\n'

    For code written against the documented dict answers, ``proc["process_id"]``,
    ``proc["status"]`` and ``proc.get("name", "unnamed")`` also work.
    """

    _KEYS = ("process_id", "execution_id", "status", "name", "language", "timeout")

    def __init__(
        self,
        sandbox: AsyncSandbox,
        watcher: Watcher,
        process_id: str,
        *,
        execution_id: str | None = None,
        name: str | None = None,
        status: str = ProcessStatus.QUEUED,
        language: str | None = None,
        timeout: int | None = None,
        version: int | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._watcher = watcher
        self._agent: Agent = watcher.agent
        self._id = process_id
        self._language = language
        self._timeout = timeout
        #: whether this handle killed the process (a kill with its sandbox is a loss)
        self._killed_here = False
        # shared with every other handle on this process of the same sandbox
        self._state = state = watcher.state(process_id)
        if state.status == "unknown" or (version is not None and (state.version or 0) < version):
            state.status = status
        if version is not None and (state.version is None or state.version < version):
            state.version = version
        state.name = state.name or name
        state.execution_id = state.execution_id or execution_id

    # ----------------------------------------------------------------- plain state
    @property
    def id(self) -> str:
        """The process id (``proc_...``)."""
        return self._id

    @property
    def process_id(self) -> str:
        """Same as :attr:`id`, the documented field name."""
        return self._id

    @property
    def execution_id(self) -> str | None:
        return self._state.execution_id

    @property
    def name(self) -> str | None:
        return self._state.name

    @property
    def language(self) -> str | None:
        return self._language

    @property
    def timeout(self) -> int | None:
        """The process's lifetime limit on the server, in seconds."""
        return self._timeout

    @property
    def sandbox(self) -> AsyncSandbox:
        return self._sandbox

    @property
    def status(self) -> str:
        """The last known status (no I/O; see :meth:`refresh`)."""
        return self._state.status

    @property
    def info(self) -> ProcessInfo | None:
        """The last full record seen, if any."""
        return self._state.info

    @property
    def result(self) -> ProcessResult | None:
        """The final result once :meth:`wait` has seen the process end."""
        return self._state.result

    @property
    def done(self) -> bool:
        """Whether the process is known to have ended (see :attr:`ProcessInfo.is_done`)."""
        info = self._state.info
        if info is not None and info.status == self._state.status:
            return info.is_done
        return self._state.status in ProcessStatus.TERMINAL

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key`` as a dict answer would have it, or ``default``."""
        value = getattr(self, key) if key in self._KEYS else None
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return key in self._KEYS

    def __repr__(self) -> str:
        name = f" name={self.name!r}" if self.name else ""
        return f"<AsyncBackgroundProcess {self._id}{name} status={self.status!r}>"

    # ----------------------------------------------------------------------- I/O
    async def refresh(self) -> ProcessInfo:
        """Fetch the current record from the sandbox and return it.

        >>> info = await proc.refresh()  # doctest: +SKIP
        >>> info.status  # doctest: +SKIP
        'running'
        """
        info = await self._agent.get_process(self._id)
        self._watcher.observe(info)
        return info

    async def wait(
        self, timeout: float | None = None, *, check: bool = False, keep_alive: bool = False
    ) -> ProcessResult:
        """Wait until the process ends and return its result, output included.

        ``timeout`` bounds the wait only: on expiry :class:`WaitTimeoutError` (also a
        ``TimeoutError``) is raised and the process keeps running. With ``check=True`` a
        failed, killed or timed-out process raises :class:`ProcessFailedError`. A process
        the sandbox does not know raises :class:`ProcessNotFoundError` at once; a sandbox
        that disappears meanwhile (killed, expired) :class:`SandboxLostError`; a closed
        client ends the wait with :class:`ClientClosedError`. With ``keep_alive=True`` the
        sandbox's timeout is extended while the wait lasts (never past ``timeout``).

        >>> result = await proc.wait(timeout=30, check=True)  # doctest: +SKIP
        """
        limit = validate.optional_timeout("timeout", timeout)
        result = self._state.result
        if result is None:
            deadline = None if limit is None else time.monotonic() + limit
            hold = (
                keep(self._sandbox, self._agent.keeper, deadline)
                if keep_alive
                else contextlib.nullcontext()
            )
            async with hold:
                if limit is None:
                    result = await self._wait_done()
                else:
                    result = await within(limit, self._wait_done)
            if result is None:
                assert limit is not None
                raise WaitTimeoutError(
                    f"process {self._id} still {self.status} after waiting {limit:g}s "
                    "(it keeps running; wait again or kill() it)",
                    process_id=self._id,
                )
        if check and result.status in ProcessStatus.UNSUCCESSFUL:
            raise ProcessFailedError(result)
        return result

    async def _wait_done(self) -> ProcessResult:
        state = self._state
        info = state.info
        if info is None or not info.is_done:
            await self._agent.ensure_ready_waiting()
            fut = self._watcher.watch(state)
            try:
                info = await fut
            except (SandboxNotFoundError, NetworkError) as exc:
                if isinstance(exc, SandboxLostError) or not await sandbox_gone(self._agent):
                    raise
                raise lost(self._agent, self._id) from exc
            finally:
                self._watcher.unwatch(self._id, fut)
            killed = info.status == ProcessStatus.KILLED and not self._killed_here
            if killed and await sandbox_gone(self._agent):  # killed with its sandbox
                raise lost(self._agent, self._id)
        if state.result is None:
            state.result = await self._agent.full_result(info)
        return state.result

    async def kill(self, *, timeout: float = 30) -> bool:
        """Kill the process (its whole process group) and return True once the server
        reports it ended; False when it had already ended. Raises :class:`WaitTimeoutError`
        when the end is not confirmed within ``timeout`` seconds.

        >>> await proc.kill()  # doctest: +SKIP
        True
        """
        limit = validate.positive_number("timeout", timeout)
        if self.done:
            return False
        try:
            await self._agent.kill_process(self._id)
        except ProcessNotFoundError:
            await self._safe_refresh()
            return False
        self._killed_here = True
        policy = self._agent.polling
        confirmed = await confirm_ended(
            self.refresh, limit=limit, first=policy.initial_interval, longest=policy.max_interval
        )
        if not confirmed:
            raise WaitTimeoutError(
                f"process {self._id} was killed but is still {self.status} after {limit:g}s",
                process_id=self._id,
            )
        if self._state.status in ProcessStatus.ACTIVE or self._state.status == "unknown":
            self._state.status = ProcessStatus.KILLED
        return True

    async def _safe_refresh(self) -> None:
        try:
            await self.refresh()
        except HopxError:
            pass

    async def output(self, *, interval: float | None = None) -> AsyncIterator[OutputChunk]:
        """Stream new stdout/stderr as it appears, until the process ends.

        Each byte is yielded once. The server pushes the output over a WebSocket where it
        offers that (``output_push``); otherwise, or if that connection fails, it is read by
        server-side offsets where advertised, else derived from the full output of each
        poll. A paused sandbox is waited for. The output streamed is also in the result of
        a later :meth:`wait`. On a server whose process records carry no output at all (the
        OpenAPI shape) it raises :class:`OutputUnavailableError` rather than yield nothing.

        >>> async for chunk in proc.output():  # doctest: +SKIP
        ...     print(chunk.stream, chunk.text, end="")
        """
        if interval is not None:
            validate.positive_number("interval", interval)
        agent = self._agent
        await agent.ensure_ready_waiting()
        if agent.has_feature("output_push") and agent.has_feature("output_offsets"):
            stream = self._pushed_output(interval)
        elif agent.has_feature("output_offsets"):
            stream = self._offset_output(interval)
        else:
            stream = self._polled_output(interval)
        async for chunk in stream:
            yield chunk

    async def _pushed_output(self, interval: float | None) -> AsyncIterator[OutputChunk]:
        # Pushed until the server says the process ended; the final record (and any rest,
        # should the connection fail) is then read by offsets from where the push got to.
        agent = self._agent
        cursor = OutputCursor()
        collected = self._kept()
        path = f"/execute/processes/{segment(self._id, 'process_id')}/stream"
        while True:
            received = False
            try:
                async for data in agent.stream_messages(
                    path, params=cursor.params(), resource="process"
                ):
                    received = True
                    chunk = pushed_chunk(data, cursor)
                    if chunk is not None:
                        collected.add(chunk)
                        yield chunk
            except ConflictError as exc:
                await agent.wait_while_paused(exc)
                continue
            except (NetworkError, APIError):
                # No push here after all (a proxy that does not upgrade, a missing route),
                # or it broke off: read on by offsets; never try a push that never worked.
                if not received:
                    agent.forget_feature("output_push")
            break
        async for chunk in self._offset_output(interval, cursor, collected):
            yield chunk

    async def _offset_output(
        self,
        interval: float | None,
        cursor: OutputCursor | None = None,
        collected: KeptOutput | None = None,
    ) -> AsyncIterator[OutputChunk]:
        agent, policy = self._agent, self._agent.polling
        cursor = cursor or OutputCursor()
        wait = policy.long_poll if agent.has_feature("long_poll") else None
        if collected is None:
            collected = self._kept()
        while True:
            try:
                data = await agent.read_output(self._id, cursor, wait=wait)
            except PAUSE_ERRORS as exc:  # 409, or a paused agent unreachable (5xx, dropped)
                await agent.wait_while_paused(exc)
                continue
            for chunk in cursor.take(data):
                collected.add(chunk)
                yield chunk
            info = status_only(data)
            self._watcher.observe(info, full=False)
            if info.is_done and cursor.drained(data):
                if self._state.result is None:
                    self._state.result = ProcessResult.from_info(
                        info,
                        stdout=collected.text("stdout"),
                        stderr=collected.text("stderr"),
                        cut=(collected.truncated("stdout"), collected.truncated("stderr")),
                    )
                return
            if wait is None:
                await asyncio.sleep(interval or policy.initial_interval)

    def _kept(self) -> KeptOutput:
        return KeptOutput(limit=self._agent.control.transport.limits.max_output_bytes)

    async def _polled_output(self, interval: float | None) -> AsyncIterator[OutputChunk]:
        # Fed by the sandbox's watcher (one list per tick for every follower and waiter);
        # ``interval`` does not apply: the watcher paces the polls.
        watcher, pid, follower = self._watcher, self._id, TailFollower()
        info = self._state.info
        end = None if info is not None and info.is_done else watcher.watch(self._state)
        try:
            while True:
                if info is not None:
                    if not info.output_available:
                        raise _no_output(pid)
                    for chunk in follower.take(info):
                        yield chunk
                    if info.is_done:
                        return
                assert end is not None
                if not end.done():
                    tick = watcher.next_record(pid)
                    try:
                        await asyncio.wait((end, tick), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        watcher.drop_record(pid, tick)
                    if not end.done():
                        info = tick.result()
                        continue
                info = end.result()
        finally:
            if end is not None:
                watcher.unwatch(pid, end)


def _no_output(process_id: str) -> OutputUnavailableError:
    return OutputUnavailableError(
        f"the server reports no output for process {process_id} (its process records carry "
        "no stdout/stderr); wait() still gives its status and exit code",
        process_id=process_id,
    )


# ------------------------------------------------------------------- handles of a sandbox
def handle_for(sandbox: AsyncSandbox, watcher: Watcher, process_id: str) -> AsyncBackgroundProcess:
    """The live handle on ``process_id`` of ``sandbox`` (whose watcher is ``watcher``), or a
    new one (no I/O)."""
    handles = watcher.handles
    proc = handles.get(process_id)
    if proc is None:
        proc = handles[process_id] = AsyncBackgroundProcess(
            sandbox, watcher, process_id, status="unknown"
        )
    return proc


async def start_process(
    sandbox: AsyncSandbox, watcher: Watcher, path: str, body: dict[str, Any], language: str
) -> AsyncBackgroundProcess:
    """Start a background process in ``sandbox`` (whose watcher is ``watcher``); its handle."""
    answer = await watcher.agent.start(path, body, language)
    proc = AsyncBackgroundProcess(
        sandbox,
        watcher,
        answer.process_id,
        execution_id=answer.execution_id,
        name=answer.name,
        status=answer.status,
        language=answer.language,
        timeout=answer.timeout,
        version=answer.version,
    )
    watcher.handles[proc.id] = proc
    return proc
