"""Coalesced polling: however many handles wait in a sandbox, each watcher tick is one list
request (a full list without the extensions), and no request is made per process; counted
at a proxy.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy

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
    # one full list per tick for all 20 (one list per process would make lists 20x polls);
    # how many ticks it takes depends on the machine's load, so it is not bounded here
    assert lists == sandbox.watcher_stats.polls >= 1
    # no long polls, no per-process requests
    assert proxy.count("GET", "/execute/processes/{proc}") == 0


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
