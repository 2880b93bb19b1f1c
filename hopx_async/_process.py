"""The background-process handle and the per-sandbox watcher that coalesces polls.

One :class:`_Watcher` per sandbox runs only while somebody waits on one of its processes.
Each tick costs one request whatever the number of waiters: a long poll of the changes
since the last answer where the server offers it (``list_since``), otherwise one
``GET /execute/processes`` at an interval that grows with the age of the youngest process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from . import _validation as validate
from ._errors import (
    HopxError,
    ProcessFailedError,
    ProcessNotFoundError,
    WaitTimeoutError,
)
from ._models import OutputChunk, ProcessInfo, ProcessResult, ProcessStatus

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["AsyncBackgroundProcess"]

logger = logging.getLogger("hopx_async")

#: polls in a row a waited-on process may be missing from a full list before it is "gone"
_MISSING_POLLS = 3


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
        self._id = process_id
        self._execution_id = execution_id
        self._name = name
        self._status = status
        self._language = language
        self._timeout = timeout
        self._version = version
        self._info: ProcessInfo | None = None
        self._result: ProcessResult | None = None
        self._seen_at = time.monotonic()

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
        return self._execution_id

    @property
    def name(self) -> str | None:
        return self._name

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
        return self._status

    @property
    def info(self) -> ProcessInfo | None:
        """The last full record seen, if any."""
        return self._info

    @property
    def result(self) -> ProcessResult | None:
        """The final result once :meth:`wait` has seen the process end."""
        return self._result

    @property
    def done(self) -> bool:
        """Whether the last known status is terminal."""
        return self._status in ProcessStatus.TERMINAL

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
        name = f" name={self._name!r}" if self._name else ""
        return f"<AsyncBackgroundProcess {self._id}{name} status={self._status!r}>"

    def _observe(self, info: ProcessInfo) -> None:
        """Take a newer record (from any request) as the known state."""
        if self._version is not None and info.version is not None and info.version < self._version:
            return
        self._info = info
        self._status = info.status
        if info.version is not None:
            self._version = info.version
        if info.name and not self._name:
            self._name = info.name
        if info.execution_id and not self._execution_id:
            self._execution_id = info.execution_id

    # ----------------------------------------------------------------------- I/O
    async def refresh(self) -> ProcessInfo:
        """Fetch the current record from the sandbox and return it.

        >>> info = await proc.refresh()  # doctest: +SKIP
        >>> info.status  # doctest: +SKIP
        'running'
        """
        info = await self._sandbox.get_process(self._id)
        return info

    async def wait(self, timeout: float | None = None, *, check: bool = False) -> ProcessResult:
        """Wait until the process ends and return its result, output included.

        ``timeout`` bounds the wait only: on expiry :class:`WaitTimeoutError` (also a
        ``TimeoutError``) is raised and the process keeps running. With ``check=True`` a
        failed, killed or timed-out process raises :class:`ProcessFailedError`.

        >>> result = await proc.wait(timeout=30, check=True)  # doctest: +SKIP
        """
        deadline = validate.optional_timeout("timeout", timeout)
        if self._result is None:
            if deadline is None:
                await self._wait_done()
            else:
                try:
                    await asyncio.wait_for(self._wait_done(), deadline)
                except asyncio.TimeoutError:
                    raise WaitTimeoutError(
                        f"process {self._id} still {self._status} after waiting {deadline:g}s "
                        "(it keeps running; wait again or kill() it)",
                        process_id=self._id,
                    ) from None
        assert self._result is not None
        if check and self._result.status in ProcessStatus.UNSUCCESSFUL:
            raise ProcessFailedError(self._result)
        return self._result

    async def _wait_done(self) -> None:
        info = self._info
        if info is None or not info.is_done:
            await self._sandbox._ensure_ready()
            watcher = self._sandbox._watcher
            fut = watcher.watch(self)
            try:
                info = await fut
            finally:
                watcher.unwatch(self._id, fut)
        if self._result is None:
            self._result = await self._sandbox._full_result(info)

    async def kill(self) -> bool:
        """Kill the process (its whole process group). False when it had already ended.

        >>> await proc.kill()  # doctest: +SKIP
        True
        """
        if self.done:
            return False
        try:
            await self._sandbox.kill_process(self._id)
        except ProcessNotFoundError:
            await self._safe_refresh()
            return False
        self._status = ProcessStatus.KILLED
        return True

    async def _safe_refresh(self) -> None:
        try:
            await self.refresh()
        except HopxError:
            pass

    async def output(self, *, interval: float | None = None) -> AsyncIterator[OutputChunk]:
        """Stream new stdout/stderr as it appears, until the process ends.

        Each byte is yielded once. Uses server-side offsets where advertised, otherwise
        derives the new part from the full output of each poll.

        >>> async for chunk in proc.output():  # doctest: +SKIP
        ...     print(chunk.stream, chunk.text, end="")
        """
        if interval is not None:
            validate.positive_number("interval", interval)
        async for chunk in self._sandbox._stream_output(self, interval):
            yield chunk


class _Watcher:
    """Polls one sandbox for the processes somebody waits on; one request per tick."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox
        self._waiting: dict[str, list[asyncio.Future[ProcessInfo]]] = {}
        self._started: dict[str, float] = {}
        self._missing: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[list[ProcessInfo]] | None = None
        self._cursor: int | None = None
        self._restart = False
        #: requests this watcher has sent, for diagnostics and tests
        self.polls = 0

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def watch(self, proc: AsyncBackgroundProcess) -> asyncio.Future[ProcessInfo]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProcessInfo] = loop.create_future()
        self._waiting.setdefault(proc.id, []).append(fut)
        self._started.setdefault(proc.id, proc._seen_at)
        # Changes after the one before the handle's last known version (a start answer can
        # report an older status with the newest version); everything when it knows none,
        # which still costs one request for any number of such handles.
        floor = 0 if proc._version is None else proc._version - 1
        if self._cursor is None or floor < self._cursor:
            self._cursor = floor
            if self._inflight is not None and not self._inflight.done():
                # The poll in flight asks for changes after a later version: restart it.
                self._restart = True
                self._inflight.cancel()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"hopx-watch-{self._sandbox.id}")
        return fut

    def unwatch(self, process_id: str, fut: asyncio.Future[ProcessInfo]) -> None:
        futs = self._waiting.get(process_id)
        if futs is not None:
            if fut in futs:
                futs.remove(fut)
            if not futs:
                del self._waiting[process_id]
                self._started.pop(process_id, None)
                self._missing.pop(process_id, None)
        if not self._waiting and self._task is not None and not self._task.done():
            self._task.cancel()

    def _interval(self) -> float:
        policy = self._sandbox._client._polling
        now = time.monotonic()
        youngest = min((now - t for t in self._started.values()), default=0.0)
        interval = min(policy.max_interval, max(policy.initial_interval, policy.growth * youngest))
        return max(interval, self._sandbox._min_poll_interval())

    def _pause(self, since: bool) -> float:
        """The pause before the next poll: a long poll only batches bursts of changes."""
        if since:
            policy = self._sandbox._client._polling
            return max(policy.initial_interval, self._sandbox._min_poll_interval())
        return self._interval()

    async def _run(self) -> None:
        try:
            while self._waiting:
                since = self._sandbox._has_feature("list_since")
                self._inflight = asyncio.ensure_future(self._poll(since))
                try:
                    infos = await self._inflight
                except asyncio.CancelledError:
                    if self._restart:
                        self._restart = False
                        continue  # restarted by watch() with an older cursor
                    raise
                finally:
                    self._inflight = None
                self._dispatch(infos, full=not since)
                if self._waiting:
                    await asyncio.sleep(self._pause(since))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sandbox is gone, the key was revoked, ...
            for futs in self._waiting.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(exc)
        finally:
            if self._inflight is not None:
                self._inflight.cancel()

    async def _poll(self, since: bool) -> list[ProcessInfo]:
        self.polls += 1
        if not since:
            return await self._sandbox._list_raw()
        wait = self._sandbox._client._polling.long_poll
        cursor = self._cursor or 0
        infos, version = await self._sandbox._list_since(cursor, wait)
        if version is not None:
            # A counter that went back means the server lost its history (a restart without
            # its state): start over from everything rather than wait for changes forever.
            self._cursor = version if version >= cursor else 0
        return infos

    def _dispatch(self, infos: list[ProcessInfo], *, full: bool) -> None:
        seen = set()
        for info in infos:
            seen.add(info.process_id)
            self._sandbox._observe(info)
            if info.is_done and info.process_id in self._waiting:
                for fut in self._waiting.pop(info.process_id):
                    if not fut.done():
                        fut.set_result(info)
                self._started.pop(info.process_id, None)
        if full:
            for pid in list(self._waiting):
                if pid in seen:
                    self._missing.pop(pid, None)
                    continue
                self._missing[pid] = self._missing.get(pid, 0) + 1
                if self._missing[pid] >= _MISSING_POLLS:
                    error = ProcessNotFoundError(
                        f"process {pid} is no longer listed by sandbox {self._sandbox.id}",
                        status=404,
                        code="PROCESS_NOT_FOUND",
                    )
                    for fut in self._waiting.pop(pid):
                        if not fut.done():
                            fut.set_exception(error)
                    self._started.pop(pid, None)
