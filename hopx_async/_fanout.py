"""Fan-out: wait for many processes (``wait_all``, ``as_completed``), and the bookkeeping
that ``run_many`` (:mod:`._batch`) shares with them.

Everything runs on an anyio task group: when one part fails (a callback raises, a process
fails with ``check=True``, the caller's timeout ends) the rest is cancelled and nothing is
left waiting or running on the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from typing import Any

import anyio

from . import _validation as validate
from ._errors import ValidationError, WaitTimeoutError
from ._models import ProcessResult
from ._process import AsyncBackgroundProcess
from ._task import ProgressCallback, Task

__all__ = ["ProgressCallback", "Tally", "Task", "as_completed", "check_callback", "wait_all"]


def check_callback(on_progress: Any) -> None:
    if on_progress is not None and not callable(on_progress):
        raise ValidationError(
            "on_progress", f"expected a function (done, total, result), got {on_progress!r}"
        )


def handles(processes: Iterable[AsyncBackgroundProcess]) -> list[AsyncBackgroundProcess]:
    """The processes as a list, each checked to be a handle."""
    procs = list(processes)
    for item in procs:
        if not isinstance(item, AsyncBackgroundProcess):
            raise ValidationError(
                "processes",
                f"expected handles returned by run_code_background(), got {type(item).__name__}",
            )
    return procs


class Tally:
    """The per-item bookkeeping of one fan-out: results in the order given, the progress
    callback, and the first failure (which cancels the rest)."""

    __slots__ = ("done", "failure", "on_progress", "results", "total", "unfinished")

    def __init__(
        self, total: int, on_progress: ProgressCallback | None, *, unfinished: str
    ) -> None:
        #: the timeout's message, formatted with ``left`` ("3 of 10") and ``limit`` (seconds)
        self.unfinished = unfinished
        self.total = total
        self.done = 0
        self.results: list[ProcessResult | None] = [None] * total
        self.failure: BaseException | None = None
        self.on_progress = on_progress

    def ended(self, index: int, result: ProcessResult) -> None:
        """Item ``index`` ended with ``result`` (the callback may raise: the caller fails)."""
        self.results[index] = result
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, result)

    def failed(self, error: BaseException, scope: anyio.CancelScope) -> None:
        """An item failed: the first failure is kept, and the rest is cancelled."""
        if self.failure is None:
            self.failure = error
        scope.cancel()

    async def run(
        self,
        limit: float | None,
        one: Callable[[int, anyio.CancelScope], Coroutine[Any, Any, None]],
        order: Iterable[int] | None = None,
    ) -> list[ProcessResult]:
        """``one(index, scope)`` for every item (in ``order``) on a task group, within
        ``limit`` seconds; the results, or the first failure raised (a timeout as
        :class:`WaitTimeoutError`)."""
        with anyio.move_on_after(limit) as timer:
            async with anyio.create_task_group() as group:
                for index in range(self.total) if order is None else order:
                    group.start_soon(one, index, group.cancel_scope)
        if self.failure is not None:
            raise self.failure
        if timer.cancelled_caught:
            assert limit is not None
            left = f"{self.total - self.done} of {self.total}"
            raise WaitTimeoutError(self.unfinished.format(left=left, limit=limit))
        return [r for r in self.results if r is not None]


async def wait_all(
    processes: Iterable[AsyncBackgroundProcess],
    *,
    timeout: float | None = None,
    check: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[ProcessResult]:
    """Wait for every process; results in the order given. See :meth:`AsyncHopx.wait_all`."""
    procs = handles(processes)
    limit = validate.optional_timeout("timeout", timeout)
    check_callback(on_progress)
    tally = Tally(
        len(procs),
        on_progress,
        unfinished="{left} processes still running after {limit:g}s (they keep running)",
    )

    async def one(index: int, scope: anyio.CancelScope) -> None:
        try:
            tally.ended(index, await procs[index].wait(check=check))
        except Exception as exc:
            tally.failed(exc, scope)

    return await tally.run(limit, one)


async def as_completed(
    processes: Iterable[AsyncBackgroundProcess], *, timeout: float | None = None
) -> AsyncGenerator[ProcessResult, None]:
    """Yield each result as soon as its process ends. See :meth:`AsyncHopx.as_completed`."""
    procs = handles(processes)
    limit = validate.optional_timeout("timeout", timeout)
    tasks = [asyncio.ensure_future(p.wait()) for p in procs]
    remaining = len(tasks)
    try:
        for fut in asyncio.as_completed(tasks, timeout=limit):
            try:
                result = await fut
            except asyncio.TimeoutError:
                assert limit is not None
                raise WaitTimeoutError(
                    f"{remaining} of {len(tasks)} processes still running after "
                    f"{limit:g}s (they keep running)"
                ) from None
            remaining -= 1
            yield result
    finally:
        for task in tasks:
            task.cancel()
        # collect them, so that no waiter outlives the iteration (nor warns later)
        await asyncio.gather(*tasks, return_exceptions=True)
