"""Waking only for what waiters need; counted at the proxy, never timed.

A batch "finishes together" here through a lock: a synchronous command (which makes no
process record) holds ``flock gate`` until a ``release`` file appears; the batch's processes
each wait for a shared lock on the same file (``flock`` on an open descriptor: no child to
start once it has the lock), so they all end the moment it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from hopx_async import AsyncBackgroundProcess, AsyncHopx, AsyncSandbox, PollPolicy

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio

LIST = ("GET", "/execute/processes")
HOLD = "flock gate sh -c 'touch held; while [ ! -e release ]; do sleep 0.01; done'"


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30.0) -> None:
    """Wait (bounded) until ``await check()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


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


async def test_fanout_ending_together_costs_at_most_two_lists_per_sandbox(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    sandboxes = 10
    per_sandbox: Counter[str] = Counter()
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
        lists = proxy.count(*LIST) - before
        polls = {box.sandbox_id: box.watcher_stats.polls for box in boxes}
    assert lists == sum(polls.values())
    # counted at the server's side of the wire, per sandbox: the batch of ten endings costs
    # one held poll, or two when the batch was split between two answers
    assert {box.sandbox_id: per_sandbox[box.sandbox_id] for box in boxes} == polls
    assert all(1 <= p <= 2 for p in polls.values()), f"list requests per sandbox: {polls}"


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


async def test_without_extensions_only_changed_records_become_models(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.05),
        ) as client,
        client.sandboxes.create("code-interpreter") as sandbox,
    ):
        async with gated_batch(sandbox, 20) as procs:
            waiting = asyncio.ensure_future(client.wait_all(procs))

            async def many_polls() -> bool:
                return sandbox.watcher_stats.polls >= 6

            await until(many_polls, "six full lists")
            parsed_while_running = sandbox.watcher_stats.records_parsed
            await sandbox.commands.run("touch release")
            results = await asyncio.wait_for(waiting, 60)
        stats = sandbox.watcher_stats
    assert [r.status for r in results] == ["completed"] * 20
    assert proxy.count(*LIST) == stats.polls
    # six lists of 20 unchanged running records: each record became a model once ...
    assert parsed_while_running == 20
    # ... and once more when it ended (not once per list)
    assert stats.records_parsed == 40 < stats.polls * 20


def test_full_list_keys_follow_the_listed_processes() -> None:
    """Changed records become models; the keys kept are those of the last list only."""
    from hopx_async._lists import changed_processes

    def rec(pid: str, status: str, out: str = "") -> dict[str, Any]:
        return {"process_id": pid, "status": status, "stdout": out, "stderr": ""}

    infos, keys = changed_processes([rec("a", "running"), rec("b", "running")], {})
    assert [i.process_id for i in infos] == ["a", "b"]
    # unchanged: nothing to build; new output or a new status: that record only
    infos, keys = changed_processes([rec("a", "running"), rec("b", "running", "x")], keys)
    assert [i.process_id for i in infos] == ["b"]
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys)
    assert [(i.process_id, i.status) for i in infos] == [("a", "completed")]
    # an ended record that someone starts waiting on later is built again for that waiter
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys, {"a"})
    assert [i.process_id for i in infos] == ["a"]
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys, {"b"})
    assert infos == []
    # a process that disappeared from the list is forgotten
    _, keys = changed_processes([rec("b", "running", "x")], keys)
    assert set(keys) == {"b"}


def test_record_keys_of_odd_records() -> None:
    """Non-scalar fields, a numeric id or an ``id`` instead of ``process_id`` still key."""
    from hopx_async._lists import changed_processes, record_key

    odd = {"id": 7, "status": "running", "exit_code": [1], "stdout": {"x": 1}}
    assert record_key(odd) == record_key(dict(odd))
    assert record_key(odd) != record_key({**odd, "exit_code": [2]})
    infos, keys = changed_processes([odd], {})
    assert [i.process_id for i in infos] == ["7"] and keys == {"7": record_key(odd)}
    plain = {"process_id": "p", "status": "running", "stdout": "ab", "end_time": "t"}
    assert changed_processes([plain], {})[1] == {"p": record_key(plain)}
    assert changed_processes([odd], keys)[0] == []
    ended = {**odd, "status": "completed", "end_time": "2026-01-01T00:00:00Z"}
    assert [i.status for i in changed_processes([ended], keys)[0]] == ["completed"]


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


def test_full_list_skips_records_nobody_holds() -> None:
    """Records of processes without a handle cost no key and no model; waited ones never skip."""
    from hopx_async._lists import changed_processes

    items = [{"process_id": p, "status": "running"} for p in ("a", "b", "c")]
    infos, keys = changed_processes(items, {}, (), held={"a"})
    assert [i.process_id for i in infos] == ["a"] and set(keys) == {"a"}
    infos, keys = changed_processes(items, keys, {"b"}, held={"a"})
    assert [i.process_id for i in infos] == ["b"] and set(keys) == {"a", "b"}
    # a handle made later gets its record from the next list
    infos, keys = changed_processes(items, keys, (), held={"a", "c"})
    assert [i.process_id for i in infos] == ["c"] and set(keys) == {"a", "c"}
