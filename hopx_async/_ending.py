"""How a wait or a kill ends, when it is not a plain record: a sandbox that disappeared
(:class:`SandboxLostError`) and a kill confirmed by the server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._agent import Agent
from ._errors import HopxError, ProcessNotFoundError, SandboxLostError, SandboxNotFoundError
from ._models import ProcessInfo

__all__ = ["confirm_ended", "lost", "sandbox_gone", "within"]

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def within(seconds: float, run: Callable[[], Awaitable[T]]) -> T | None:
        """``await run()``, or None once ``seconds`` passed (asyncio's own timeout: cheaper
        per call than a cancel scope of anyio)."""
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await run()
        except TimeoutError:
            if scope.expired():
                return None
            raise

else:  # pragma: no cover - Python 3.10

    async def within(seconds: float, run: Callable[[], Awaitable[T]]) -> T | None:
        """``await run()``, or None once ``seconds`` passed."""
        with anyio.move_on_after(seconds):
            return await run()
        return None


#: sandbox statuses after which it never runs anything again
GONE_STATUSES = frozenset({"killed", "deleted", "terminated", "expired", "stopped"})


async def sandbox_gone(agent: Agent) -> bool:
    """Whether the sandbox no longer exists (asked of the control plane unless this client
    killed it or found it gone already); False when that cannot be told. The waits that all
    fail together when a sandbox disappears share one question (``agent.gone_question``)."""
    if agent.killed:
        return True
    asking = agent.gone_question
    if asking is None or asking.done():
        asking = agent.gone_question = asyncio.ensure_future(_ask(agent))
    return await asyncio.shield(asking)


async def _ask(agent: Agent) -> bool:
    try:
        info = await agent.refresh_info()
    except SandboxNotFoundError:
        gone = True
    except HopxError:
        return False
    else:
        gone = info.status in GONE_STATUSES
    if gone:
        agent.killed = True  # later requests to it fail at once
    return gone


def lost(agent: Agent, process_id: str, cause: BaseException | None = None) -> SandboxLostError:
    reason = f" ({cause})" if cause is not None else ""
    return SandboxLostError(
        f"sandbox {agent.sandbox_id} disappeared while process {process_id} was waited on" + reason,
        sandbox_id=agent.sandbox_id,
        process_id=process_id,
    )


async def confirm_ended(
    refresh: Callable[[], Awaitable[ProcessInfo]],
    *,
    limit: float,
    first: float,
    longest: float,
) -> bool:
    """Ask until the process is reported ended (True; also when it is gone from the list),
    for at most ``limit`` seconds (False), pausing ``first`` seconds, doubling up to
    ``longest``."""
    deadline = time.monotonic() + limit
    pause = first
    while True:
        try:
            info = await refresh()
        except ProcessNotFoundError:
            return True
        if info.is_done:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        await asyncio.sleep(min(pause, deadline - now))
        pause = min(pause * 2, longest)
