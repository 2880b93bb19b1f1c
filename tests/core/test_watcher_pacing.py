"""When the watcher polls: only while someone waits, at an interval that grows with the
processes' age up to a cap, and never faster than the server's rate limit allows.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy

pytestmark = pytest.mark.anyio


def test_interval_grows_with_age_and_is_capped() -> None:
    from hopx_async._watcher import poll_interval

    policy = PollPolicy(initial_interval=0.05, growth=0.1, max_interval=2.0)
    assert poll_interval(policy, 0.0) == pytest.approx(0.05)
    assert poll_interval(policy, 5.0) == pytest.approx(0.5)
    assert poll_interval(policy, 605.0) == 2.0
    # a rate limit of 30 requests a minute allows a poll every 4 s at most (half the budget)
    assert poll_interval(policy, 0.0, min_interval=4.0) == pytest.approx(4.0)


async def test_watcher_stops_when_nobody_waits(sandbox: Any) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(5)")
    waiter = asyncio.ensure_future(proc.wait())
    for _ in range(500):
        if sandbox.watcher_stats.waiters:
            break
        await asyncio.sleep(0.01)
    assert sandbox.watcher_stats.active
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(500):  # the watcher task ends at its next step
        if not sandbox.watcher_stats.active:
            break
        await asyncio.sleep(0.01)
    stats = sandbox.watcher_stats
    assert (stats.waiters, stats.active) == (0, False)
    assert (await proc.refresh()).status == "running", "cancelling a wait kills nothing"
    await proc.kill()


class _PauseAgent:
    """What ``Watcher._pause`` reads of an agent: the policy, the rate limit, the features."""

    def __init__(self, min_interval: float) -> None:
        self.sandbox_id = "sbx_pause"
        self.polling = PollPolicy(initial_interval=0.05)
        self._min = min_interval

    def min_poll_interval(self) -> float:
        return self._min

    def has_feature(self, name: str) -> bool:
        return True


@pytest.mark.parametrize("min_interval", [0.0, 4.0])
def test_pause_after_a_terminal_only_answer_is_only_the_rate_limit(min_interval: float) -> None:
    """Endings are gathered at the server: the next terminal-only poll goes out at once,
    unless the rate limit asks for more; other quick answers are spaced to the interval."""
    from hopx_async._watcher import Watcher

    watcher = Watcher(_PauseAgent(min_interval))  # type: ignore[arg-type]
    watcher._terminal = True
    assert watcher._pause(since=True, took=0.001) == min_interval
    watcher._terminal = False  # a long poll that wakes for every change
    assert watcher._pause(since=True, took=0.01) == pytest.approx(max(0.04, min_interval))
    assert watcher._pause(since=True, took=1.0) == min_interval


async def test_rate_limit_headers_of_a_real_limited_server_are_respected() -> None:
    """A local backend with a real limit: the client learns the budget from its headers."""
    from hopx_async.local import LocalBackend

    async with (
        LocalBackend(rate_limit_per_minute=4) as limited,
        AsyncHopx(api_key=limited.api_key, base_url=limited.base_url) as client,
    ):
        sandbox = await client.sandboxes.create("base")  # 1 control-plane request
        for _ in range(3):
            await client.sandboxes.get(sandbox.id)  # 4: the budget is spent
        await sandbox.run_code("print(1)")  # agent: /health + /execute, its own budget
        # 2 of the agent's 4 are left for the window's minute: a poll per half minute at
        # most (just after the start, which keeps 1 of them, the next poll waits the reset)
        assert 29.0 < sandbox.watcher_stats.min_interval <= 60.0
