"""One watcher per sandbox: coalesced polls, fanned out to every handle and waiter.

A :class:`Watcher` runs a task only while somebody waits on one of the sandbox's processes.
Each tick costs one request whatever the number of waiters: a long poll of the changes since
the last answer where the agent offers it (``list_since``; only of the endings where it also
offers ``list_terminal``, so that a ``queued -> running`` change wakes nobody), otherwise one
``GET /execute/processes`` at an interval that grows with the age of the youngest process.
After a terminal-only long poll (the server gathers the endings of a batch into one answer),
or any long poll that the server held, the next one goes out at once; other answers that come
back quicker than the policy's ``initial_interval`` are spaced to one per interval (a burst of
changes gathers into the next answer).

Polls are paced by the agent's rate-limit budget (:mod:`._ratelimit`): what is free, spread
until the window's reset; while starts go out, a quarter of what is free above a reserve for
them, and no poll while only the reserve is left, so that waiting never draws a 429 of its own
and leaves the window to the starts.

A full list is parsed lazily: only the records whose status or output changed since the last
list (a cheap key per raw record), or that ended while somebody waits on them, become models,
and records of processes nobody holds a handle on are skipped; the keys kept are those of the
last list only, so they never outgrow the sandbox's processes.

Every answer about a process, from any request, goes to its :class:`ProcessState`, which all
handles on that process share. The watcher also keeps the sandbox's live handles by process
id (:attr:`Watcher.handles`), so that the same id gives the same handle.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Collection
from typing import TYPE_CHECKING

from ._agent import Agent
from ._connection import PAUSE_ERRORS
from ._errors import ProcessNotFoundError, RateLimitError
from ._lists import RecordKey, changed_processes, next_cursor
from ._models import ProcessInfo
from ._procstate import ProcessState, WatcherStats, poll_interval, rate_pause
from ._ratelimit import POLLING

if TYPE_CHECKING:
    from ._process import AsyncBackgroundProcess

__all__ = ["ProcessState", "Watcher", "WatcherStats", "poll_interval"]

#: full lists in a row a waited-on process may be missing from before it is "not found"
MISSING_POLLS = 3
#: endings of processes nobody held a handle on, kept per sandbox for a handle made just after
UNCLAIMED_ENDINGS = 128
#: seconds between two looks at the rate limit's pace while it holds the next poll
RECHECK = 0.5


class Watcher:
    """Polls one sandbox for the processes somebody waits on; one request per tick."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: the sandbox's live handles by process id (weakly held)
        self.handles: weakref.WeakValueDictionary[str, AsyncBackgroundProcess] = (
            weakref.WeakValueDictionary()
        )
        self._states: weakref.WeakValueDictionary[str, ProcessState] = weakref.WeakValueDictionary()
        #: the ids of ``_states`` (and maybe some whose state is gone): a plain set, so that a
        #: full list skips the records nobody holds at the cost of one lookup each
        self._held: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[ProcessInfo]]] = {}
        #: output followers' futures for the next record of their process (see next_record)
        self._ticks: dict[str, list[asyncio.Future[ProcessInfo]]] = {}
        self._known: set[str] = set()
        self._started: dict[str, float] = {}
        self._missing: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[tuple[list[ProcessInfo], Collection[str] | None]] | None = None
        #: a cheap key per record of the last full list (its ids only: bounded)
        self._keys: dict[str, RecordKey] = {}
        self._cursor: int | None = None
        self._restart = False
        #: endings that changes-since answers brought for processes without a handle yet (a
        #: start answer can arrive after the ending of its process), the oldest dropped first
        self._unclaimed: dict[str, ProcessInfo] = {}
        #: endings at or below this version may be missing from ``_unclaimed`` (never listed
        #: by a changes-since answer, or dropped); None before the first such answer
        self._forgotten: int | None = None
        #: whether the last poll was a terminal-only long poll
        self._terminal = False
        #: when (``time.monotonic()``) the next poll may go out, after the last one's pause
        self._next_poll = 0.0
        self._closed: BaseException | None = None
        #: list requests this watcher has sent
        self.polls = 0
        #: records of list answers made into models
        self.records_parsed = 0

    def __repr__(self) -> str:
        return f"<Watcher of {self.agent.sandbox_id} waiters={self.waiters}>"

    # ----------------------------------------------------------------------- state
    def state(self, process_id: str) -> ProcessState:
        """The shared state of ``process_id`` (made on first use, kept while handles live)."""
        state = self._states.get(process_id)
        if state is None:
            state = self._states[process_id] = ProcessState(process_id)
            self._held.add(process_id)
            if len(self._held) > 2 * len(self._states) + 64:  # drop the ids of gone states
                self._held = set(self._states.keys())
        return state

    def observe(self, info: ProcessInfo, *, full: bool = True) -> None:
        """Give a record to the state of its process, if any handle holds one."""
        state = self._states.get(info.process_id)
        if state is not None:
            state.observe(info, full=full)

    def mark(self, process_id: str, status: str) -> None:
        state = self._states.get(process_id)
        if state is not None:
            state.status = status

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiters(self) -> int:
        return sum(len(futs) for futs in self._waiting.values())

    def stats(self) -> WatcherStats:
        return WatcherStats(
            polls=self.polls,
            waiters=self.waiters,
            active=self.active,
            min_interval=self.agent.min_poll_interval(),
            records_parsed=self.records_parsed,
        )

    # --------------------------------------------------------------------- waiting
    def watch(self, state: ProcessState) -> asyncio.Future[ProcessInfo]:
        """A future that gets the process's final record (or its error)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProcessInfo] = loop.create_future()
        if self._closed is not None:
            fut.set_exception(self._closed)
            return fut
        pid = state.process_id
        # Changes after the one before the handle's last known version (a start answer can
        # report an older status with the newest version); everything when it knows none,
        # which still costs one request for any number of such handles.
        floor = 0 if state.version is None else state.version - 1
        behind = self._cursor is None or floor < self._cursor
        if behind:
            ended = self._unclaimed.pop(pid, None)
            if ended is not None:  # it ended before its handle was made: known already
                state.observe(ended)
                fut.set_result(ended)
                return fut
        self._waiting.setdefault(pid, []).append(fut)
        self._started.setdefault(pid, state.seen_at)
        if state.known:
            self._known.add(pid)
        if behind and not self._seen_since(floor):
            self._cursor = floor
            if self._inflight is not None and not self._inflight.done():
                # The poll in flight asks for changes after a later version: restart it.
                self._restart = True
                self._inflight.cancel()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"hopx-watch-{self.agent.sandbox_id}")
        return fut

    def _seen_since(self, floor: int) -> bool:
        """Whether every ending after version ``floor`` up to the cursor has been taken (the
        ending of a process with a handle, or kept in ``_unclaimed``): then a process newer
        than ``floor`` that is not in ``_unclaimed`` has not ended by the cursor, and the
        next answer (or the one in flight) brings its ending."""
        return self._cursor is not None and self._forgotten is not None and floor >= self._forgotten

    def _unclaimed_ending(self, info: ProcessInfo) -> None:
        """Keep the ending of a process without a handle (the oldest goes past the bound)."""
        self._unclaimed[info.process_id] = info
        if len(self._unclaimed) > UNCLAIMED_ENDINGS:
            oldest = self._unclaimed.pop(next(iter(self._unclaimed)))
            self._forget(oldest.version)

    def _forget(self, version: int | None) -> None:
        """Endings up to ``version`` (None: up to the cursor) may no longer be known."""
        if version is None:
            version = self._cursor or 0
        self._forgotten = version if self._forgotten is None else max(self._forgotten, version)

    def next_record(self, process_id: str) -> asyncio.Future[ProcessInfo]:
        """A future for the next changed record of ``process_id`` that a poll brings (for
        ``output()`` followers, who also ``watch()`` so that the polls go on): followers
        share the watcher's one request per tick."""
        fut: asyncio.Future[ProcessInfo] = asyncio.get_running_loop().create_future()
        self._ticks.setdefault(process_id, []).append(fut)
        return fut

    def drop_record(self, process_id: str, fut: asyncio.Future[ProcessInfo]) -> None:
        futs = self._ticks.get(process_id)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._ticks[process_id]

    def unwatch(self, process_id: str, fut: asyncio.Future[ProcessInfo]) -> None:
        futs = self._waiting.get(process_id)
        if futs is not None:
            if fut in futs:
                futs.remove(fut)
            if not futs:
                self._drop(process_id)
        if not self._waiting and self._task is not None and not self._task.done():
            # forgotten at once: a watch() that follows before the task has stopped starts
            # a new one instead of relying on this one, which is being cancelled
            self._task.cancel()
            self._task = None

    def close(self, error: BaseException) -> None:
        """End every pending wait with ``error`` and stop polling; later waits fail at once."""
        self._closed = error
        self._unclaimed.clear()
        for pid in list(self._waiting):
            self._fail(pid, error)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _drop(self, pid: str) -> list[asyncio.Future[ProcessInfo]]:
        self._started.pop(pid, None)
        self._missing.pop(pid, None)
        self._known.discard(pid)
        return self._waiting.pop(pid, [])

    def _fail(self, pid: str, error: BaseException) -> None:
        for fut in self._drop(pid):
            if not fut.done():
                fut.set_exception(error)

    # ---------------------------------------------------------------------- polling
    def _pause(self, since: bool, took: float, minimum: float | None = None) -> float:
        """The pause before the next poll (``took``: how long the last one was out).

        A terminal-only long poll wakes only for endings, and the server then gathers the
        endings that follow closely into the same answer, so the next one goes out at once.
        Other long polls wake for any change: the next one goes out at once after an answer
        that was held, while answers that come back sooner than ``initial_interval`` (changes
        in quick succession, or a server that does not hold) are spaced to one per
        ``initial_interval``, which gathers the rest of a burst into the next answer.
        Never below what the rate limit allows.
        """
        policy = self.agent.polling
        if minimum is None:
            minimum = self.agent.min_poll_interval()
        if since and self._terminal:
            return minimum
        if since:
            return max(policy.initial_interval - took, minimum, 0.0)
        now = time.monotonic()
        youngest = now - max(self._started.values(), default=now)
        return poll_interval(policy, youngest, minimum)

    async def _wait_pause(self, since: bool, took: float) -> None:
        """Sleep the pause after a poll. While the rate limit's pace is what holds the next
        poll, it is asked again every ``RECHECK`` seconds: it shortens when the starts that
        kept a reserve of the budget are over."""
        answered = time.monotonic()
        while self._waiting:
            minimum = self.agent.min_poll_interval()
            pause = self._pause(since, took, minimum)
            self._next_poll = answered + pause
            wait = self._next_poll - time.monotonic()
            if wait <= 0:
                return
            if minimum < pause:  # the policy's pause: it does not change
                await asyncio.sleep(wait)
                return
            await asyncio.sleep(min(wait, RECHECK))

    async def _run(self) -> None:
        POLLING.set(True)  # this task's requests are polls (the rate-limit budget's reserve)
        try:
            # A watcher that stopped when its last wait ended keeps the pace it had: a wait
            # that starts just after does not cost a poll before the pause is over. Full
            # lists also wait for the first interval of processes seen just now (a process
            # that just started has not ended yet; a long poll is held at the server anyway).
            now = time.monotonic()
            delay = self._next_poll - now
            if not self.agent.has_feature("list_since"):
                oldest = min(self._started.values(), default=now)
                delay = max(delay, oldest + self.agent.polling.initial_interval - now)
            if delay > 0:
                await asyncio.sleep(delay)
            limited = 0
            while self._waiting:
                hold = self.agent.poll_hold()
                if hold > 0:  # leave the rest of the window to starts (asked again while
                    await asyncio.sleep(min(hold, RECHECK))  # they go on: they may stop)
                    continue
                since = self.agent.has_feature("list_since")
                sent = time.monotonic()
                # Only a long poll can be restarted by watch() (its cursor moved back), so
                # only it runs as a task of its own; a full list is awaited directly.
                poll: Awaitable[tuple[list[ProcessInfo], Collection[str] | None]]
                poll = self._poll(since)
                if since:
                    poll = self._inflight = asyncio.ensure_future(poll)
                try:
                    infos, listed = await poll
                except asyncio.CancelledError:
                    if self._restart:
                        self._restart = False
                        continue  # restarted by watch() with an older cursor
                    raise
                except PAUSE_ERRORS as exc:
                    await self.agent.wait_while_paused(exc, sent)  # raises unless paused
                    continue
                except RateLimitError as exc:
                    # A 429 never fails a wait: back off as advised (else doubling) and go on.
                    limited += 1
                    await asyncio.sleep(rate_pause(exc, limited, self.agent.polling))
                    continue
                finally:
                    self._inflight = None
                limited = 0
                self._dispatch(infos, listed)
                await self._wait_pause(since, time.monotonic() - sent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sandbox is gone, the key was revoked, ...
            for pid in list(self._waiting):
                self._fail(pid, exc)
        finally:
            if self._inflight is not None:
                self._inflight.cancel()

    async def _poll(self, since: bool) -> tuple[list[ProcessInfo], Collection[str] | None]:
        """One list request: the records to take, and the ids of every process listed when
        it was a full list (else None)."""
        self.polls += 1
        if not since:
            items = await self.agent.list_raw()
            infos, self._keys = changed_processes(items, self._keys, self._waiting, self._held)
            self.records_parsed += len(infos)
            return infos, self._keys
        # A waited-on process not known to exist is looked for in a full list, at once.
        unknown = any(pid not in self._known for pid in self._waiting)
        cursor = 0 if unknown else (self._cursor or 0)
        wait = 0.0 if unknown else self.agent.polling.long_poll
        terminal = self._terminal = wait > 0 and self.agent.has_feature("list_terminal")
        if self._forgotten is None:
            self._forgotten = cursor  # endings before the first answer were never listed
        infos, version = await self.agent.list_since(cursor, wait, terminal=terminal)
        self._cursor = next_cursor(cursor, version)
        self.records_parsed += len(infos)
        full = cursor == 0 and not terminal  # a terminal-only answer never lists everything
        if full or self._cursor < cursor:
            self._forget(None)  # the ended processes of a full list are not kept
        return infos, ({info.process_id for info in infos} if full else None)

    def _dispatch(self, infos: list[ProcessInfo], listed: Collection[str] | None) -> None:
        """Take the records; ``listed``: every id of a full list (None for a partial one)."""
        ticks = self._ticks
        for info in infos:
            pid = info.process_id
            state = self._states.get(pid)
            if state is not None:
                state.observe(info)
            if ticks and pid in ticks:
                for fut in ticks.pop(pid):
                    if not fut.done():
                        fut.set_result(info)
            if pid not in self._waiting:
                if state is None and listed is None and info.is_done:
                    self._unclaimed_ending(info)
                continue
            self._known.add(pid)
            if info.is_done:
                for fut in self._drop(pid):
                    if not fut.done():
                        fut.set_result(info)
        if listed is None:
            return
        for pid in [pid for pid in self._missing if pid in listed]:
            del self._missing[pid]
        for pid in self._waiting.keys() - listed:  # (a set operation: no loop in Python)
            self._missing[pid] = self._missing.get(pid, 0) + 1
            # a process never seen is unknown at once; a listed one may be briefly missing
            if pid not in self._known or self._missing[pid] >= MISSING_POLLS:
                self._fail(
                    pid,
                    ProcessNotFoundError(
                        f"sandbox {self.agent.sandbox_id} has no process {pid}",
                        status=404,
                        code="PROCESS_NOT_FOUND",
                    ),
                )
