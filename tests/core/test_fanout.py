"""Fan-out: wait_all, as_completed and run_many over many processes and sandboxes: the order
of the results, timeouts that leave the processes running, one connection pool, bounded
concurrency, and cancelling everything when one part fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    ProcessFailedError,
    ProcessResult,
    Task,
    ValidationError,
    WaitTimeoutError,
)

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio

SLEEP = "import time; time.sleep(30)"


class Boom(Exception):
    pass


async def test_wait_all_whose_callback_raises_cancels_the_rest(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    quick = await sandbox.run_code_background("print('quick')")
    slow = [await sandbox.run_code_background(SLEEP) for _ in range(4)]

    def progress(done: int, total: int, result: ProcessResult) -> None:
        raise Boom(result.stdout)

    with pytest.raises(Boom, match="quick"):
        await client.wait_all([quick, *slow], on_progress=progress)
    stats = sandbox.watcher_stats
    assert (stats.waiters, stats.active) == (0, False), "no waiter, no polling task left"
    assert {(await p.refresh()).status for p in slow} == {"running"}, "waits end, not processes"
    for p in slow:
        await p.kill()


async def test_wait_all_with_check_fails_at_the_first_failure(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    failing = await sandbox.run_code_background("raise SystemExit(3)")
    slow = [await sandbox.run_code_background(SLEEP) for _ in range(3)]
    with pytest.raises(ProcessFailedError) as err:
        await client.wait_all([*slow, failing], check=True)
    assert err.value.result.process_id == failing.id
    assert err.value.result.exit_code == 3
    assert sandbox.watcher_stats.waiters == 0
    for p in slow:
        await p.kill()


async def test_wait_all_timeout_leaves_no_waiter(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    procs = [await sandbox.run_code_background(SLEEP) for _ in range(2)]
    with pytest.raises(WaitTimeoutError, match="2 of 2"):
        await client.wait_all(procs, timeout=0.2)
    assert sandbox.watcher_stats.waiters == 0
    for p in procs:
        await p.kill()


async def test_as_completed_left_early_leaves_no_waiter(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    fast = await sandbox.run_code_background("print(1)")
    slow = await sandbox.run_code_background(SLEEP)
    iterator = client.as_completed([fast, slow])
    first = await iterator.__anext__()
    assert first.process_id == fast.id
    await iterator.aclose()
    assert sandbox.watcher_stats.waiters == 0
    await slow.kill()


# --------------------------------------------------------------------------- run_many
def test_task_takes_exactly_one_of_code_and_command() -> None:
    assert Task(code="print(1)").language == "python"
    assert Task(command="ls").timeout == 300
    with pytest.raises(ValidationError, match="exactly one"):
        Task()
    with pytest.raises(ValidationError, match="exactly one"):
        Task(code="print(1)", command="ls")
    with pytest.raises(ValidationError, match="language"):
        Task(code="1", language="cobol")
    with pytest.raises(ValidationError, match="env"):
        Task(code="1", env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="timeout"):
        Task(code="1", timeout=0)
    with pytest.raises(AttributeError):
        Task(code="1").code = "2"  # type: ignore[misc]
    secret = Task(code="1", env={"TOKEN": "s3cret"})
    assert "TOKEN" in repr(secret) and "s3cret" not in repr(secret)
    assert secret.env == {"TOKEN": "s3cret"}


async def test_run_many_refuses_bad_arguments_before_any_request(
    backend: Any, proxy: FaultProxy
) -> None:
    from hopx_async import SandboxInfo

    client = AsyncHopx(api_key="k", base_url=proxy.url)
    info = SandboxInfo.from_wire({"id": "sbx_x", "public_host": proxy.url})
    box = AsyncSandbox(client, client._control, info, token="t")
    tasks = [Task(code="print(1)")]
    with pytest.raises(ValidationError, match="sandboxes"):
        await client.run_many(tasks, sandboxes=[])
    with pytest.raises(ValidationError, match="max_concurrency"):
        await client.run_many(tasks, sandboxes=[box], max_concurrency=0)
    with pytest.raises(ValidationError, match="tasks"):
        await client.run_many(["print(1)"], sandboxes=[box])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="timeout"):
        await client.run_many(tasks, sandboxes=[box], timeout=-1)
    with pytest.raises(ValidationError, match="on_progress"):
        await client.run_many(tasks, sandboxes=[box], on_progress=3)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="on_progress"):
        await client.wait_all([box.process("proc_1")], on_progress="x")  # type: ignore[arg-type]
    assert not proxy.counts, "no request was sent"
    assert await client.run_many([], sandboxes=[box]) == []


async def test_run_many_spreads_round_robin_and_keeps_task_order(client: AsyncHopx) -> None:
    async with (
        client.sandboxes.create("base", env_vars={"BOX": "a"}) as a,
        client.sandboxes.create("base", env_vars={"BOX": "b"}) as b,
    ):
        tasks = [
            Task(code=f"import os, time; time.sleep(0.{9 - i}); print(os.environ['BOX'], {i})")
            for i in range(6)
        ]
        tasks.append(Task(command="echo shell $BOX", name="sh"))
        seen: list[tuple[int, int]] = []
        results = await client.run_many(
            tasks,
            sandboxes=[a, b],
            max_concurrency=3,
            on_progress=lambda done, total, r: seen.append((done, total)),
        )
    assert [r.stdout for r in results] == [
        *(f"{'ab'[i % 2]} {i}\n" for i in range(6)),
        "shell a\n",
    ]
    assert seen == [(n, 7) for n in range(1, 8)]


async def test_run_many_keeps_at_most_max_concurrency_running(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    code = (
        "import os, time\n"
        "open('ledger', 'a').write('+\\n'); time.sleep(0.2); open('ledger', 'a').write('-\\n')"
    )
    await client.run_many([Task(code=code)] * 8, sandboxes=[sandbox], max_concurrency=2)
    ledger = (await sandbox.run_code("print(open('ledger').read(), end='')")).stdout.split()
    running = peak = 0
    for mark in ledger:
        running += 1 if mark == "+" else -1
        peak = max(peak, running)
    assert len(ledger) == 16
    assert peak <= 2


async def test_run_many_failure_kills_what_it_started(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    tasks = [Task(code=SLEEP, name=f"slow{i}") for i in range(3)]
    tasks.insert(1, Task(code="raise SystemExit(2)", name="bad"))
    tasks += [Task(code=SLEEP, name="never") for _ in range(3)]
    with pytest.raises(ProcessFailedError) as err:
        await client.run_many(tasks, sandboxes=[sandbox], max_concurrency=4, check=True)
    assert err.value.result.exit_code == 2
    assert await sandbox.list_processes(status=["running", "queued"]) == []
    assert await sandbox.list_processes(name="never") == [], "the rest never started"
    assert sandbox.watcher_stats.waiters == 0


async def test_run_many_callback_error_and_timeout_kill_what_was_started(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    def progress(done: int, total: int, result: ProcessResult) -> None:
        raise Boom

    tasks = [Task(code="print(1)"), Task(code=SLEEP), Task(code=SLEEP)]
    with pytest.raises(Boom):
        await client.run_many(tasks, sandboxes=[sandbox], on_progress=progress)
    assert await sandbox.list_processes(status="running") == []
    with pytest.raises(WaitTimeoutError, match="2 of 2"):
        await client.run_many([Task(code=SLEEP)] * 2, sandboxes=[sandbox], timeout=0.5)
    assert await sandbox.list_processes(status="running") == []
    assert sandbox.watcher_stats.waiters == 0


async def test_list_processes_accepts_documented_statuses_only(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print(1)")
    await proc.wait()
    with pytest.raises(ValidationError, match="queued, running, completed") as err:
        await sandbox.list_processes(status="done")
    assert err.value.argument == "status"
    done = await sandbox.list_processes(status=["completed", "failed"])
    assert [p.process_id for p in done] == [proc.id]
    assert await sandbox.list_processes(status="running") == []


async def test_cancelled_fan_out_leaves_no_task(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    procs = [await sandbox.run_code_background(SLEEP) for _ in range(3)]
    before = len(asyncio.all_tasks())
    waiting = asyncio.ensure_future(client.wait_all(procs))
    for _ in range(1000):
        if sandbox.watcher_stats.waiters == 3:
            break
        await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert sandbox.watcher_stats.waiters == 0
    assert len(asyncio.all_tasks()) <= before
    for p in procs:
        await p.kill()


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
