"""A scope's rate-limit budget, with no I/O: what the server said (``X-RateLimit-*``,
``Retry-After``) and what the client has in flight, so that requests are held before the
server would refuse them rather than retried after a 429.

The model is the one the headers describe: ``limit`` requests per window, ``remaining`` of
them left in the current one, which ends at ``reset`` (a Unix time). The budget still free is
``remaining`` less the requests sent and not yet answered (an answer that is on its way may
already be counted by the server: counting it twice only holds a request a moment longer);
once ``reset`` is past (plus a margin: servers round it), a new window offers ``limit``.

Requests are held when nothing is free (:meth:`RateState.delay`). Polls (the requests of a
watcher's task, :data:`POLLING`) are spread so that what is free lasts until the reset
(:meth:`RateState.poll_spacing`); while other requests (starts) are being sent, polls keep a
reserve for them, take at most a quarter of the rest, and wait for the reset once only the
reserve is left (:meth:`RateState.poll_delay`).

>>> state = RateState(clock=lambda: 100.0)
>>> state.update({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "26",
...               "X-RateLimit-Reset": "109"})
>>> state.available(), round(state.poll_spacing(), 2)  # 26 free for 10 s
(26, 0.38)
>>> state.begin()  # a start goes out: 25 free, 6 kept for starts, a quarter of the rest
>>> round(state.poll_spacing(), 2)
2.11
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator, Mapping

__all__ = ["POLLING", "POLL_RESERVE", "RESET_MARGIN", "RateState"]

#: seconds added past ``X-RateLimit-Reset``: servers round the reset time (down, too)
RESET_MARGIN = 1.0
#: the share of a window's limit that polls leave to other requests (at least one request)
POLL_RESERVE = 0.1
#: the longest hold before a request, in seconds (as the longest Retry-After followed)
MAX_HOLD = 60.0
#: seconds after the last other request (a start) during which polls keep the reserve
BUSY_SECONDS = 1.0
#: while other requests go out, polls take one part in this many of what is free above the
#: reserve (the starts of a fan-out need the rest of the window)
BUSY_SHARE = 4
#: set by a watcher's task: its requests are polls (the others are what the reserve is for)
POLLING: contextvars.ContextVar[bool] = contextvars.ContextVar("hopx_polling", default=False)


class RateState:
    """What the server said of one scope's rate limit, and the requests in flight in it.

    ``clock`` gives the Unix time (``X-RateLimit-Reset`` is a Unix time).
    """

    __slots__ = ("clock", "held", "inflight", "limit", "other_at", "others", "remaining", "reset")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float | None = None
        #: requests sent in this scope and not answered yet
        self.inflight = 0
        #: of those, the ones that are not polls; and when the last such one went out
        self.others = 0
        self.other_at: float | None = None
        #: other requests than polls held until the budget renews
        self.held = 0

    # ------------------------------------------------------------------ bookkeeping
    def begin(self) -> None:
        """A request of the scope goes out (a poll when :data:`POLLING` is set)."""
        self.inflight += 1
        if not POLLING.get():
            self.others += 1
            self.other_at = self.clock()

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Count a request as in flight while the block runs (whatever way it ends)."""
        self.begin()
        other = not POLLING.get()
        try:
            yield
        finally:
            self.end()
            if other:
                self.others = max(0, self.others - 1)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Count a request as held (nothing free) while the block runs: polls then wait."""
        other = not POLLING.get()
        self.held += other
        try:
            yield
        finally:
            self.held -= other

    def end(self, headers: Mapping[str, str] | None = None) -> None:
        """A request of the scope came back (``headers``: its answer's, if it got one)."""
        self.inflight = max(0, self.inflight - 1)
        if headers is not None:
            self.update(headers)

    def update(self, headers: Mapping[str, str]) -> None:
        """Take an answer's ``X-RateLimit-*`` headers.

        Answers may arrive out of order: within one window (the same reset) the smallest
        ``remaining`` wins, and an answer of an older window changes nothing.
        """
        try:
            limit = int(headers["X-RateLimit-Limit"]) if "X-RateLimit-Limit" in headers else None
            remaining = (
                int(headers["X-RateLimit-Remaining"])
                if "X-RateLimit-Remaining" in headers
                else None
            )
            reset = float(headers["X-RateLimit-Reset"]) if "X-RateLimit-Reset" in headers else None
        except ValueError:
            return
        if reset is not None and not math.isfinite(reset):
            reset = None
        if limit is not None:
            self.limit = limit
        if reset is not None and self.reset is not None and reset < self.reset:
            return  # an answer of a window that has ended already
        if (
            remaining is not None
            and self.remaining is not None
            and reset is not None
            and reset == self.reset
            and not self._renewed()
        ):
            remaining = min(remaining, self.remaining)
        if remaining is not None:
            self.remaining = remaining
        if reset is not None:
            self.reset = reset

    def refused(self, retry_after: float | None) -> None:
        """A 429 came back: nothing is free until ``retry_after`` seconds from now, if
        that is later than the known reset."""
        self.remaining = 0
        if retry_after is not None and retry_after > 0:
            until = self.clock() + retry_after - RESET_MARGIN
            if self.reset is None or until > self.reset:
                self.reset = until

    # ------------------------------------------------------------------- the budget
    def _renewed(self) -> bool:
        """Whether the window the last headers spoke of has ended (with the margin)."""
        return self.reset is not None and self.clock() >= self.reset + RESET_MARGIN

    def available(self) -> int | None:
        """Requests the scope may still send in the current window (None: no limit known).

        >>> RateState().available() is None
        True
        """
        if self.limit is None or self.remaining is None:
            return None
        base = self.limit if self._renewed() else self.remaining
        return base - self.inflight

    def until_reset(self) -> float | None:
        """Seconds until a little past the advertised reset (None: no reset known).

        >>> state = RateState(clock=lambda: 100.0); state.reset = 102.0
        >>> state.until_reset()
        3.0
        """
        if self.reset is None:
            return None
        wait = self.reset + RESET_MARGIN - self.clock()
        return None if wait <= 0 else min(MAX_HOLD, wait)

    def delay(self) -> float:
        """Seconds to hold the next request: until the reset when nothing is free.

        >>> state = RateState(clock=lambda: 100.0)
        >>> state.update({"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "1",
        ...               "X-RateLimit-Reset": "104"})
        >>> state.delay(); state.begin(); state.delay()
        0.0
        5.0
        """
        free = self.available()
        if free is None or free > 0:
            return 0.0
        return self.until_reset() or 0.0

    def busy(self) -> bool:
        """Whether other requests than polls (starts) are in flight or went out just now."""
        if self.others > 0 or self.held > 0:
            return True
        return self.other_at is not None and self.clock() - self.other_at < BUSY_SECONDS

    def reserve(self) -> int:
        """The requests polls leave free in a window while others are being sent (at least
        one), none when only polls are.

        >>> state = RateState(); state.limit = 300; state.begin()
        >>> state.reserve()
        30
        """
        if not self.busy():
            return 0
        return max(1, math.ceil((self.limit or 0) * POLL_RESERVE))

    def poll_delay(self) -> float:
        """Seconds to hold a poll: until the reset while only the reserve is free, or while
        other requests wait for the budget (they go first when it renews)."""
        free = self.available()
        if self.held > 0:
            return self.until_reset() or (BUSY_SECONDS / 10 if free is not None else 0.0)
        if free is None or free > self.reserve():
            return 0.0
        return self.until_reset() or 0.0

    def poll_spacing(self) -> float:
        """The shortest interval between two polls: what is free above the reserve spread over
        the time to the reset (at most that time), only a quarter of it while other requests
        are being sent; without a known reset, half of the limit per minute; 0 when no limit is
        known.

        >>> state = RateState(); state.limit = 60
        >>> state.poll_spacing()
        2.0
        """
        if not self.limit:
            return 0.0
        free = self.available()
        until = self.until_reset()
        if free is None or self.reset is None:
            return 2 * 60.0 / self.limit
        if until is None:  # a new window: the next answer tells its reset
            return 0.0
        polls = (free - self.reserve()) / (BUSY_SHARE if self.busy() else 1)
        if polls <= 1:
            return until
        return min(until, until / polls)
