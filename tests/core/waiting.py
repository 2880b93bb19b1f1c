"""Helpers of the watcher tests: a bounded wait for a condition, and a batch that ends together.

A batch "finishes together" through a lock: a synchronous command (which makes no process
record) holds ``flock gate`` until a ``release`` file appears; the batch's processes each
wait for a shared lock on the same file (``flock`` on an open descriptor: no child to start
once it has the lock), so they all end the moment it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

from hopx_async import AsyncBackgroundProcess, AsyncSandbox

HOLD = "flock gate sh -c 'touch held; while [ ! -e release ]; do sleep 0.01; done'"


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = 30.0
) -> None:
    """Wait (bounded) until ``condition()`` (or, for a coroutine function, its result) holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


async def file_count(sandbox: AsyncSandbox, pattern: str) -> int:
    result = await sandbox.commands.run(f"ls {pattern} 2>/dev/null | wc -l")
    return int(result.stdout.strip() or 0)


@contextlib.asynccontextmanager
async def gated_batch(
    sandbox: AsyncSandbox, size: int
) -> AsyncIterator[list[AsyncBackgroundProcess]]:
    """``size`` running processes that all end when ``release`` is created in the sandbox."""
    holder = asyncio.ensure_future(sandbox.commands.run(HOLD, timeout=120))
    try:
        await until(lambda: _exists(sandbox, "held"), "the lock holder")
        procs = [
            await sandbox.commands.run(
                f"exec 3<gate; touch ready{i}; exec flock -s 3", background=True
            )
            for i in range(size)
        ]
        await until(lambda: _count_is(sandbox, "ready*", size), "every process to reach the lock")
        yield procs
    finally:
        await sandbox.commands.run("touch release")
        await holder


async def _exists(sandbox: AsyncSandbox, name: str) -> bool:
    return (await sandbox.commands.run(f"test -e {name}")).exit_code == 0


async def _count_is(sandbox: AsyncSandbox, pattern: str, size: int) -> bool:
    return await file_count(sandbox, pattern) == size
