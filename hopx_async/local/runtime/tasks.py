"""Cancellation safety, written once: work that must finish even if its caller goes away.

A start or a deletion stopped half-way would leave state behind (a child nobody tracks, a
sandbox half removed). ``to_the_end`` runs such work as a task of its own and shields it:
a cancelled caller stops waiting, the work goes on, and its error, if any, is retrieved (it
is not worth a warning). ``on_abandoned`` is called with the result when the work succeeds
after its caller went away (to end a child that nobody will watch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["to_the_end"]

_T = TypeVar("_T")


async def to_the_end(
    work: Awaitable[_T], *, on_abandoned: Callable[[_T], object] | None = None
) -> _T:
    """Await ``work`` (a coroutine, task or future) to its end, shielded from cancellation.

    An existing task or future is shielded as it is, so that several callers may share it.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_abandoned is not None:
            task.add_done_callback(_then(on_abandoned))
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an error nobody waits for any more is not worth a warning


def _then(on_abandoned: Callable[[_T], object]) -> Callable[[asyncio.Future[_T]], None]:
    def call(done: asyncio.Future[_T]) -> None:
        if not done.cancelled() and done.exception() is None:
            on_abandoned(done.result())

    return call
