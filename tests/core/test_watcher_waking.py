"""The watcher wakes only for what its waiters need: endings, not starts; an ending it
already saw costs no request; the change cursor starts over when the server's counter goes
back. Counted at the proxy, never timed (the batches that end together: ``waiting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from aiohttp import web

from hopx_async import AsyncHopx
from hopx_async.local.service.changes import LINGER_MAX, LINGER_QUIET

from .proxy import FaultProxy
from .waiting import gated_batch, until

pytestmark = pytest.mark.anyio

LIST = ("GET", "/execute/processes")


async def test_fanout_ending_together_costs_at_most_two_lists_per_sandbox(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    sandboxes = 10
    per_sandbox: Counter[str] = Counter()
    ended: dict[str, list[datetime | None]] = {}
    proxy.on_request = lambda request: _count_list(request, per_sandbox)
    async with contextlib.AsyncExitStack() as stack:
        boxes = [
            await stack.enter_async_context(proxied.sandboxes.create("code-interpreter"))
            for _ in range(sandboxes)
        ]
        batches = [await stack.enter_async_context(gated_batch(box, 10)) for box in boxes]
        before = proxy.count(*LIST)
        for box, procs in zip(boxes, batches, strict=True):
            waiting = asyncio.ensure_future(proxied.wait_all(procs))
            await box.commands.run("touch release")
            results = await asyncio.wait_for(waiting, 60)
            assert [r.status for r in results] == ["completed"] * 10
            ended[box.sandbox_id] = [r.completed_at for r in results]
        lists = proxy.count(*LIST) - before
        polls = {box.sandbox_id: box.watcher_stats.polls for box in boxes}
    assert lists == sum(polls.values())
    # counted at the server's side of the wire, per sandbox: the batch of ten endings costs
    # one held poll, or two when the batch was split between two answers. On a loaded
    # machine ten processes released together may end further apart than the server's
    # linger: each group the linger could not join may cost one more answer, no more.
    assert {box.sandbox_id: per_sandbox[box.sandbox_id] for box in boxes} == polls
    allowed = {sid: 1 + _linger_groups(times) for sid, times in ended.items()}
    assert all(1 <= polls[sid] <= allowed[sid] for sid in polls), (polls, allowed)


def _linger_groups(ended: list[datetime | None]) -> int:
    """How many answers the server's linger splits these endings into, at most."""
    times = sorted(t.timestamp() for t in ended if t is not None)
    slack = 0.001  # the times are rendered to the millisecond
    assert len(times) == len(ended), "every ending has its time"
    groups, first, last = 1, times[0], times[0]
    for t in times[1:]:
        if t - last > LINGER_QUIET - slack or t - first > LINGER_MAX - slack:
            groups, first = groups + 1, t
        last = t
    return groups


def _count_list(request: web.Request, counts: Counter[str]) -> None:
    """Count ``GET /sandboxes/{id}/execute/processes`` by sandbox id."""
    found = re.fullmatch(r"/sandboxes/([^/]+)/execute/processes", request.path)
    if request.method == "GET" and found is not None:
        counts[found.group(1)] += 1


async def test_a_start_does_not_wake_a_waiter_for_endings(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    async with proxied.sandboxes.create("code-interpreter") as sandbox:
        async with gated_batch(sandbox, 1) as (proc,):
            waiting = asyncio.ensure_future(proc.wait())

            async def polled() -> bool:
                return sandbox.watcher_stats.polls >= 1

            await until(polled, "the first poll")
            # queued -> running of two more processes: changes, but no ending
            others = [await sandbox.commands.run("sleep 60", background=True) for _ in range(2)]
            assert [o.status for o in others] == ["running", "running"]
            await sandbox.commands.run("touch release")
            result = await asyncio.wait_for(waiting, 60)
        assert result.status == "completed"
        assert sandbox.watcher_stats.polls == 1, "woken by a change nobody waits for"
        assert proxy.count(*LIST) == 1
        for other in others:
            await other.kill()


async def test_an_ending_seen_before_its_handle_was_made_costs_no_request(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    """A long poll brings the ending of a process nobody holds a handle on (as when its start
    answer is read after it ended): a handle made later gets it without another request."""
    import gc

    async with (
        proxied.sandboxes.create("code-interpreter") as sandbox,
        gated_batch(sandbox, 1) as (blocker,),
    ):
        waiting = asyncio.ensure_future(blocker.wait())

        def polls_reach(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return sandbox.watcher_stats.polls >= count

            return check

        await until(polls_reach(1), "the first poll")
        proc = await sandbox.commands.run("echo early", background=True)
        process_id = proc.id
        del proc
        gc.collect()
        # its ending wakes the held poll; the next poll then goes out
        await until(polls_reach(2), "the answer with the ending")
        lists = proxy.count(*LIST)
        result = await sandbox.process(process_id).wait(timeout=30)
        assert (result.status, result.stdout) == ("completed", "early\n")
        assert proxy.count(*LIST) == lists, "the ending was known already"
        await sandbox.commands.run("touch release")
        assert (await asyncio.wait_for(waiting, 60)).status == "completed"


def test_cursor_resets_when_the_server_counter_goes_back() -> None:
    from hopx_async._lists import next_cursor

    assert next_cursor(7, 9) == 9
    assert next_cursor(7, 3) == 0, "version 3 < cursor 7: the history was lost"
    assert next_cursor(0, 1) == 1
    assert next_cursor(7, None) == 7, "an answer without a counter leaves the cursor"
