"""A paused sandbox whose agent is unreachable (issue 16, item 10; docs/wire.md 13.4 X3).

The ``hopx`` dialect's ``paused_agent_answer`` is not merged yet: while the sandbox is
paused, the fault proxy answers the agent's process list with a gateway's 502, or drops the
connection, instead of the local backend's 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy, RetryPolicy

from .proxy import Fault, FaultProxy
from .waiting import until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("answer", [502, 0])
async def test_wait_keeps_waiting_while_paused_and_unreachable(
    backend: Any, proxy: FaultProxy, answer: int
) -> None:
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.1, long_poll=0.5),
            retries=RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('done')")
        await sandbox.pause()
        fault = proxy.inject(
            Fault("GET", r"/execute/processes", answer, text="Bad Gateway", times=10**6)
        )
        waiting = asyncio.ensure_future(proc.wait())
        await until(lambda: fault.hits >= 4, "the agent was asked while paused")
        await asyncio.sleep(0.2)
        assert not waiting.done(), "a paused sandbox's unreachable agent does not fail the wait"
        fault.times = 0
        await sandbox.resume()
        result = await asyncio.wait_for(waiting, 15)
        assert result.stdout == "done\n"
