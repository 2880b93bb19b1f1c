"""Waiting on a paused sandbox: its agent answers 409 while paused, and a wait or an output
stream keeps waiting (or ends with the caller's own timeout) instead of failing; a 409 that
is not a pause is raised.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, PollPolicy

from .proxy import FaultProxy
from .waiting import until

pytestmark = pytest.mark.anyio


async def test_wait_and_output_keep_waiting_while_paused(backend: Any, proxy: FaultProxy) -> None:
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.1, long_poll=0.5),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('done')")
        streamed = sandbox.process(proc.id)
        await sandbox.pause()
        looked = proxy.count("GET", "/v1/sandboxes/{sbx}")
        waiting = asyncio.ensure_future(proc.wait())

        async def stream() -> str:
            return "".join([c.text async for c in streamed.output()])

        reading = asyncio.ensure_future(stream())
        # both asked the control plane whether the sandbox is paused, and keep waiting
        await until(lambda: proxy.count("GET", "/v1/sandboxes/{sbx}") >= looked + 2, "paused")
        assert not waiting.done() and not reading.done()
        await sandbox.resume()
        assert (await asyncio.wait_for(waiting, 30)).stdout == "done\n"
        assert await asyncio.wait_for(reading, 30) == "done\n"


async def test_conflict_that_is_not_a_pause_is_raised(sandbox: AsyncSandbox) -> None:
    from hopx_async import ConflictError

    proc = await sandbox.run_code_background("import time; time.sleep(30)")
    with pytest.raises(ConflictError):  # removing a running process: a real conflict
        await sandbox.remove_process(proc.id)
    await proc.kill()


async def test_wait_on_a_paused_sandbox_ends_with_the_callers_timeout(
    backend: Any, client: AsyncHopx
) -> None:
    """A client that first meets the sandbox paused waits too, until its own timeout."""
    from hopx_async import WaitTimeoutError

    async with client.sandboxes.create("base") as sandbox:
        proc = await sandbox.run_code_background("import time; time.sleep(0.2); print('ok')")
        await sandbox.pause()
        async with AsyncHopx(
            api_key=backend.api_key,
            base_url=backend.base_url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.1),
        ) as other:
            again = await other.sandboxes.connect(sandbox.id)
            with pytest.raises(WaitTimeoutError):
                await again.process(proc.id).wait(timeout=0.5)
            waiting = asyncio.ensure_future(again.process(proc.id).wait())
            await sandbox.resume()
            assert (await asyncio.wait_for(waiting, 30)).stdout == "ok\n"
