"""The change feed: per sandbox, a counter of changes and the long polls that wait on it.

Every change of a process record bumps its sandbox's counter (``SandboxRecord.version``)
and wakes the sandbox's waiters; ``wait_for_change`` is the long poll of the process list
(``since``/``wait``, optionally terminal changes only) and ``wait_for_process`` that of one
process (its end, or output past given offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from ..runtime.output import file_size
from ..runtime.supervisor import Running
from ..state.layout import Layout
from ..state.records import ProcessRecord, SandboxRecord

__all__ = ["LINGER_MAX", "LINGER_QUIET", "ChangeFeed"]

#: a terminal-only long poll, once woken, answers when this long passed since the latest ending
#: of the batch without another one...
LINGER_QUIET = 0.004
#: ... and this long in all, at most
LINGER_MAX = 0.02


class ChangeFeed:
    """The changes of every sandbox's processes, and who waits for them.

    It reads the records and running trees that ``Processes`` keeps (the same dicts).
    """

    def __init__(
        self,
        procs: dict[str, dict[str, ProcessRecord]],
        runs: dict[str, Running],
        layout: Layout,
    ) -> None:
        self.procs = procs
        self.runs = runs
        self.layout = layout
        self._changed: dict[str, asyncio.Event] = {}
        #: per sandbox, the counter at its latest terminal change (found from the records
        #: on first use)
        self._ended_at: dict[str, int] = {}
        #: per sandbox, when (``time.monotonic()``) its latest terminal change was made
        self._ended_when: dict[str, float] = {}

    def changed(self, sandbox_id: str, version: int, *, terminal: bool) -> None:
        """A record of the sandbox changed at ``version`` (``terminal``: a process ended):
        wake everyone waiting for it."""
        if terminal:
            self._ended_at[sandbox_id] = version
            self._ended_when[sandbox_id] = time.monotonic()
        self.wake(sandbox_id)

    def wake(self, sandbox_id: str) -> None:
        """Wake everyone waiting for a change of the sandbox."""
        event = self._changed.pop(sandbox_id, None)
        if event is not None:
            event.set()

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone: drop what was kept of it, and wake its waiters."""
        self._ended_at.pop(sandbox_id, None)
        self._ended_when.pop(sandbox_id, None)
        self.wake(sandbox_id)

    async def wait_for_change(
        self, sbx: SandboxRecord, since: int, wait: float, *, terminal: bool = False
    ) -> None:
        """Return once the sandbox's counter exceeds ``since``, or after ``wait`` seconds.

        ``terminal=True``: once a process of the sandbox reached a terminal state after
        ``since`` (other changes do not count). It answers when no process ended for
        ``LINGER_QUIET`` (counted from the latest ending, not from the moment this coroutine
        resumes: a busy loop has gathered what ended meanwhile) or none still runs, so that
        a batch ending together makes one answer, also when its first endings were already
        there on arrival; ``LINGER_MAX`` at most. Starts streaming in do not hold it back.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while sbx.id in self.procs and not self._changed_since(sbx, since, terminal):
            if not await self._next_change(sbx.id, deadline - loop.time()):
                return
        if not terminal:
            return
        linger_end = min(deadline, loop.time() + LINGER_MAX)
        while sbx.id in self.procs:
            quiet = self._ended_when.get(sbx.id, 0.0) + LINGER_QUIET - time.monotonic()
            if quiet <= 0 or all(rec.finished for rec in self.procs[sbx.id].values()):
                return
            if not await self._next_change(sbx.id, min(quiet, linger_end - loop.time())):
                return

    def _changed_since(self, sbx: SandboxRecord, since: int, terminal: bool) -> bool:
        if not terminal:
            return sbx.version > since
        ended = self._ended_at.get(sbx.id)
        if ended is None:
            records = self.procs.get(sbx.id, {}).values()
            ended = max((rec.version for rec in records if rec.finished), default=0)
            self._ended_at[sbx.id] = ended
        return ended > since

    async def _next_change(self, sandbox_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the next change of the sandbox; whether one came."""
        if timeout <= 0:
            return False
        event = self._changed.setdefault(sandbox_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def wait_for_process(
        self, rec: ProcessRecord, wait: float, offsets: tuple[int, int] | None
    ) -> None:
        """Return when ``rec`` ended, has output past ``offsets``, or ``wait`` elapsed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out = self.layout.output(rec.sandbox_id, rec.process_id, "stdout")
        err = self.layout.output(rec.sandbox_id, rec.process_id, "stderr")
        while not rec.finished:
            if offsets is not None and (file_size(out) > offsets[0] or file_size(err) > offsets[1]):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            run = self.runs.get(rec.process_id)
            step = remaining if offsets is None else min(remaining, 0.05)
            if run is None:
                await asyncio.sleep(min(step, 0.05))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.done.wait()), step)
