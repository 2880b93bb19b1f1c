"""Keeping a sandbox alive while work runs in it: its timeout extended through the control
plane (``PUT /v1/sandboxes/{id}/timeout``) as long as somebody holds it.

A sandbox created with ``timeout_seconds=T`` is killed by the service ``T`` seconds after its
creation (or after the last extension). While at least one holder (a ``run_many`` task
running in it, a ``wait(keep_alive=True)``) holds it, its expiry is read (once per sandbox
object: later holds reuse what was read or set), and then
whenever less than ``2T/3`` of it is left the timeout is set again to ``T`` (about every
``T/3`` seconds, at least 1 s apart), but never past the latest deadline of its holders; a
longer expiry set by hand is left alone until it runs down. Once the last holder lets go,
nothing more is sent. A sandbox without a timeout needs nothing. Each sandbox object carries
its own ``Keeper`` (held by its agent).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._errors import HopxError, SandboxNotFoundError

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["Keeper", "keep_alive"]

logger = logging.getLogger("hopx_async")


class Keeper:
    """The keep-alive state of one sandbox (``sandbox.keeper``): its holders and its expiry."""

    __slots__ = ("deadlines", "expires", "extended", "task")

    def __init__(self) -> None:
        #: when the sandbox expires (Unix time) as last read or set; None: not read yet
        self.expires: float | None = None
        #: each holder's deadline (``time.monotonic()``), None for none
        self.deadlines: list[float | None] = []
        self.task: asyncio.Task[None] | None = None
        self.extended: list[Callable[[], None]] = []

    def timeout_set(self, seconds: int) -> None:
        """``sandbox.set_timeout(seconds)`` was answered: the sandbox's new expiry."""
        self.expires = time.time() + seconds


def _latest(deadlines: list[float | None]) -> float | None:
    return None if any(d is None for d in deadlines) else max(d for d in deadlines if d)


async def _extend(sandbox: AsyncSandbox, keeper: Keeper, seconds: int) -> None:
    if keeper.expires is None:  # read once per sandbox: a longer expiry set by hand is kept
        try:
            info = await sandbox.get_info()
        except SandboxNotFoundError:
            return  # gone: its waits learn it from their own requests
        except HopxError:
            info = sandbox.info
        keeper.expires = info.expires_at.timestamp() if info.expires_at is not None else time.time()
    expires = keeper.expires
    while keeper.deadlines:
        remaining = expires - time.time()
        deadline = _latest(keeper.deadlines)
        give = seconds
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            give = min(seconds, max(1, math.ceil(left)))
        if remaining < seconds * 2 / 3 and give > remaining:
            try:
                await sandbox.set_timeout(give)
            except SandboxNotFoundError:
                return
            except HopxError as exc:
                logger.debug("keep-alive of %s: %s", sandbox.id, exc)
            else:
                expires = time.time() + give  # (set_timeout told the keeper as well)
                for counted in keeper.extended:
                    counted()
            remaining = expires - time.time()
        await asyncio.sleep(max(1.0, remaining - seconds * 2 / 3))


@asynccontextmanager
async def keep_alive(
    sandbox: AsyncSandbox,
    keeper: Keeper,
    deadline: float | None = None,
    on_extend: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Hold ``sandbox`` alive for the block, at most until ``deadline`` (monotonic time);
    ``on_extend()`` is called after each extension while this holder holds it. ``keeper``:
    the sandbox's own (its agent's), shared by its holders."""
    seconds = sandbox.info.timeout_seconds
    if not seconds or seconds <= 0:
        yield
        return
    keeper.deadlines.append(deadline)
    if on_extend is not None:
        keeper.extended.append(on_extend)
    if keeper.task is None or keeper.task.done():
        keeper.task = asyncio.ensure_future(_extend(sandbox, keeper, seconds))
    try:
        yield
    finally:
        keeper.deadlines.remove(deadline)
        if on_extend is not None:
            keeper.extended.remove(on_extend)
        if not keeper.deadlines and keeper.task is not None:
            keeper.task.cancel()
            keeper.task = None
