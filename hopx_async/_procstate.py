"""What is known of one process (:class:`ProcessState`), a watcher's counters and its
full-list pacing; no I/O. Used by :mod:`._watcher`, which re-exports them."""

from __future__ import annotations

import time

import attrs

from ._config import PollPolicy
from ._errors import RateLimitError
from ._models import ProcessInfo, ProcessResult

__all__ = ["ProcessState", "WatcherStats", "poll_interval", "rate_pause"]

#: the longest pause after a 429 while waiting, in seconds
MAX_RATE_PAUSE = 60.0


@attrs.frozen
class WatcherStats:
    """Counters of a sandbox's watcher (``sandbox.watcher_stats``), for diagnostics and tests.

    ``polls``: list requests sent so far; ``waiters``: pending ``wait()`` calls;
    ``active``: whether its polling task runs; ``min_interval``: the shortest interval
    between polls that the agent's rate limit allows (0 when it states none);
    ``records_parsed``: process records of list answers made into models so far (a full list
    parses only the records that changed since the previous one).

    >>> WatcherStats(polls=3, waiters=0, active=False, min_interval=0.0).waiters
    0
    """

    polls: int
    waiters: int
    active: bool
    min_interval: float
    records_parsed: int = 0


def poll_interval(policy: PollPolicy, youngest_age: float, min_interval: float = 0.0) -> float:
    """The pause between full-list polls: ``growth`` times the youngest waited-on process's
    age, kept within the policy's bounds and never below what the rate limit allows.

    >>> poll_interval(PollPolicy(initial_interval=0.05, growth=0.1, max_interval=2.0), 5.0)
    0.5
    """
    interval = min(policy.max_interval, max(policy.initial_interval, policy.growth * youngest_age))
    return max(interval, min_interval)


class ProcessState:
    """What is known of one process; shared by its handles and fed by every answer."""

    __slots__ = (
        "__weakref__",
        "execution_id",
        "info",
        "name",
        "process_id",
        "result",
        "seen_at",
        "status",
        "version",
    )

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.status: str = "unknown"
        self.info: ProcessInfo | None = None
        self.result: ProcessResult | None = None
        self.version: int | None = None
        self.name: str | None = None
        self.execution_id: str | None = None
        self.seen_at = time.monotonic()

    @property
    def known(self) -> bool:
        """Whether the process is known to exist (a start answer or a record was seen)."""
        return self.version is not None or self.info is not None or self.status != "unknown"

    def observe(self, info: ProcessInfo, *, full: bool = True) -> None:
        """Take a newer record as the known state.

        ``full=False`` for records without output (offsets reads): status and version only,
        so that a later ``wait()`` still fetches the output.
        """
        if self.version is not None and info.version is not None and info.version < self.version:
            return
        if full:
            self.info = info
        self.status = info.status
        if info.version is not None:
            self.version = info.version
        if info.name and not self.name:
            self.name = info.name
        if info.execution_id and not self.execution_id:
            self.execution_id = info.execution_id


def rate_pause(error: RateLimitError, times: int, policy: PollPolicy) -> float:
    """The pause of a waiting watcher after its ``times``-th 429 in a row (the transport's
    own retries already ran out): the server's advice (``Retry-After``, ``retry_after`` or
    ``X-RateLimit-Reset`` plus a margin) when it gave one, else doubling from the policy's
    ``max_interval``; at most ``MAX_RATE_PAUSE``.

    >>> rate_pause(RateLimitError("slow down", status=429), 2, PollPolicy(max_interval=2.0))
    4.0
    """
    if error.retry_after is not None:
        return min(MAX_RATE_PAUSE, max(0.0, error.retry_after))
    return float(min(MAX_RATE_PAUSE, policy.max_interval * 2 ** (times - 1)))
