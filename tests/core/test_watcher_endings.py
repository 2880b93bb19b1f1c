"""How a wait ends other than with its process: ``wait()`` on an unknown process fails fast
(with and without the server's extensions), and closing the client or killing the sandbox
ends every pending wait.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    ClientClosedError,
    ProcessNotFoundError,
    SandboxNotFoundError,
)

from .waiting import until

pytestmark = pytest.mark.anyio


async def test_wait_on_unknown_process_fails_fast(any_server: Any) -> None:
    sandbox, _ = any_server
    await sandbox.run_code_background("print('a neighbour')")
    with pytest.raises(ProcessNotFoundError, match="proc_nope"):
        await sandbox.process("proc_nope").wait()
    # with a timeout it is still "not found", never "still running"
    with pytest.raises(ProcessNotFoundError):
        await sandbox.process("proc_nope2").wait(timeout=30)
    assert sandbox.watcher_stats.waiters == 0


async def test_wait_on_unknown_process_in_an_empty_sandbox(client: AsyncHopx) -> None:
    """No process at all: the long poll of changes must not hold the answer back."""
    async with client.sandboxes.create("base") as sandbox:
        with pytest.raises(ProcessNotFoundError):
            await sandbox.process("proc_nope").wait(timeout=30)


async def test_aclose_ends_pending_waits(backend: Any) -> None:
    client = AsyncHopx(api_key=backend.api_key, base_url=backend.base_url)
    sandbox = await client.sandboxes.create("base")
    try:
        procs = [await sandbox.run_code_background("import time; time.sleep(30)") for _ in range(3)]
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        await until(lambda: sandbox.watcher_stats.waiters == 3, "three waiters")
        await client.aclose()
        for fut in waits:
            with pytest.raises(ClientClosedError):
                await asyncio.wait_for(fut, 10)
        assert sandbox.watcher_stats.waiters == 0
        with pytest.raises(ClientClosedError):
            await procs[0].wait()  # a wait after the close fails at once too
    finally:
        async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as other:
            await (await other.sandboxes.connect(sandbox.id)).kill()


async def test_kill_of_the_sandbox_ends_pending_waits(client: AsyncHopx) -> None:
    sandbox = await client.sandboxes.create("base")
    proc = await sandbox.run_code_background("import time; time.sleep(30)")
    waiting = asyncio.ensure_future(proc.wait())
    await until(lambda: sandbox.watcher_stats.waiters == 1, "one waiter")
    await sandbox.kill()
    # it ends: with the killed process's record when the watcher saw it first, else an error
    try:
        result = await asyncio.wait_for(waiting, 10)
    except SandboxNotFoundError:
        pass
    else:
        assert result.status == "killed"
    assert sandbox.watcher_stats.waiters == 0
    with pytest.raises(SandboxNotFoundError):
        await sandbox.process("proc_other").wait()
