"""Coalesced, adaptive polling: the requests the server receives are counted at a proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy, ProcessResult

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio

PER_PROCESS = ("GET /execute/processes/{proc}",)


async def test_wait_on_100_processes_costs_one_request_per_tick(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    async with proxied.sandboxes.create("code-interpreter") as sandbox:
        procs = [
            await sandbox.run_code_background(f"import time; time.sleep(0.5); print({i})")
            for i in range(100)
        ]
        before = proxy.count("GET", "/execute/processes")
        done: list[int] = []
        results = await proxied.wait_all(procs, on_progress=lambda n, total, r: done.append(n))
        lists = proxy.count("GET", "/execute/processes") - before
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(100)]
    assert done == list(range(1, 101))
    assert lists == sandbox.watcher_stats.polls, "each tick is exactly one list request"
    assert lists < 100, f"{lists} list requests for 100 processes: polls are not coalesced"
    assert proxy.count(*PER_PROCESS[0].split(" ", 1)) == 0, "no per-process requests"


async def test_without_extensions_one_full_list_per_tick(backend: Any) -> None:
    """Against a server with no extensions (the real service), each tick is one full list."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(
            api_key=backend.api_key, base_url=proxy.url, polling=PollPolicy(initial_interval=0.05)
        ) as client,
        client.sandboxes.create("code-interpreter") as sandbox,
    ):
        procs = [
            await sandbox.run_code_background(f"import time; time.sleep(0.6); print({i})")
            for i in range(20)
        ]
        before = proxy.count("GET", "/execute/processes")
        results = await client.wait_all(procs)
        lists = proxy.count("GET", "/execute/processes") - before
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert lists == sandbox.watcher_stats.polls
    # no long polls, no per-process requests: only full lists, each one a tick for all 20
    assert proxy.count("GET", "/execute/processes/{proc}") == 0
    assert 1 <= lists <= 20


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


async def test_as_completed_yields_in_completion_order(client: AsyncHopx, sandbox: Any) -> None:
    slow = await sandbox.run_code_background("import time; time.sleep(1.0); print('slow')")
    fast = await sandbox.run_code_background("print('fast')")
    order: list[ProcessResult] = [r async for r in client.as_completed([slow, fast])]
    assert [r.stdout for r in order] == ["fast\n", "slow\n"]


async def test_many_sandboxes_share_one_pool(client: AsyncHopx) -> None:
    sandboxes = [await client.sandboxes.create("base") for _ in range(4)]
    try:
        procs = [await s.run_code_background(f"print('{s.id}')") for s in sandboxes]
        results = await client.wait_all(procs, check=True)
        assert [r.stdout.strip() for r in results] == [s.id for s in sandboxes]
        assert all(s.client is client for s in sandboxes), "one client, so one pool"
    finally:
        for s in sandboxes:
            await s.kill()


async def test_wait_all_timeout_keeps_processes(client: AsyncHopx, sandbox: Any) -> None:
    from hopx_async import WaitTimeoutError

    procs = [await sandbox.run_code_background("import time; time.sleep(20)") for _ in range(3)]
    with pytest.raises(WaitTimeoutError, match="3 of 3"):
        await client.wait_all(procs, timeout=0.3)
    assert {(await p.refresh()).status for p in procs} == {"running"}
    for p in procs:
        await p.kill()


async def test_handles_from_ids_are_waited_on_together(
    backend: Any, proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    """Handles made from bare ids (a reconnect) know no version: still one request a tick."""
    async with proxied.sandboxes.create("base") as sandbox:
        ids = [(await sandbox.run_code_background(f"print({i})")).id for i in range(20)]
        async with AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as other:
            again = await other.sandboxes.connect(sandbox.id)
            handles = [again.process(pid) for pid in ids]
            before = sum(proxy.counts.values())
            results = await other.wait_all(handles)
            sent = sum(proxy.counts.values()) - before
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert proxy.count("GET", "/execute/processes/{proc}") == 0
    assert sent <= 2 + again.watcher_stats.polls, "health check, list polls, nothing per process"


def test_cursor_resets_when_the_server_counter_goes_back() -> None:
    from hopx_async._lists import next_cursor

    assert next_cursor(7, 9) == 9
    assert next_cursor(7, 3) == 0, "version 3 < cursor 7: the history was lost"
    assert next_cursor(0, 1) == 1
    assert next_cursor(7, None) == 7, "an answer without a counter leaves the cursor"


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
