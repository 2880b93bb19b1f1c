"""How many tasks a fan-out has in flight: a window that adapts to the server (no I/O).

Additive increase, multiplicative decrease: the window starts at ``max_concurrency``; each
429 or 503 the fan-out meets (answered to it, or absorbed by the transport and counted in
``client.throttled``) halves it, at most once per ``cooldown`` seconds (a burst of refusals is
one signal), never below 1; each start answered without one grows it by ``1 / window`` (about
one more task in flight per window of successful starts), never above ``max_concurrency``.
A task holds its place in the window from its start until its process ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["Window"]


class Window:
    """The bound on tasks in flight, lowered on throttling and raised on success.

    >>> window = Window(8, cooldown=0.0)
    >>> window.throttled(); window.bound
    4
    >>> for _ in range(8): window.succeeded()
    >>> window.bound
    5
    """

    def __init__(
        self,
        maximum: int,
        *,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.maximum = maximum
        self.size = float(maximum)
        self.lowest = maximum
        self.busy = 0
        self.cooldown = cooldown
        self._clock = clock
        self._lowered_at: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_change = on_change

    @property
    def bound(self) -> int:
        """How many tasks may be in flight now."""
        return max(1, int(self.size))

    def throttled(self) -> None:
        """A 429 or 503 was met: halve the window (once per cooldown)."""
        now = self._clock()
        if self._lowered_at is not None and now - self._lowered_at < self.cooldown:
            return
        self._lowered_at = now
        before = self.bound
        self.size = max(1.0, self.size / 2)
        self.lowest = min(self.lowest, self.bound)
        if self.bound != before and self._on_change is not None:
            self._on_change(self.bound)

    def succeeded(self) -> None:
        """A start was answered without throttling: grow the window a little."""
        before = self.bound
        self.size = min(float(self.maximum), self.size + 1.0 / self.size)
        if self.bound != before:
            if self._on_change is not None:
                self._on_change(self.bound)
            self._wake()

    def _wake(self) -> None:
        """Let as many waiting tasks in as there are free places."""
        free = self.bound - self.busy
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place in the window (waiting for one) for the block."""
        while self.busy >= self.bound:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake()  # woken, then cancelled: pass the place on
                raise
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._wake()
