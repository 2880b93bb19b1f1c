"""A kill right after a start ends the process as a kill a moment later does: status
``killed``, exit code 143 (SIGTERM), and no grace period waited for.

Right after a start the process may still be its box being set up (bubblewrap's two
carriers, no code yet). The box's inner carrier is the init of its pid namespace, which
ignores a SIGTERM sent from outside; it used to live on until the grace period's SIGKILL
(1 s, exit 137), while a kill 50 ms later ended the code at once (exit 143). The backend here
has a grace period far longer than the wait: a kill that waited for it would time out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, WaitTimeoutError
from hopx_async.local import LocalBackend

pytestmark = pytest.mark.anyio

SLEEPER = "import time; time.sleep(60)"


@pytest.fixture
async def patient_sandbox() -> AsyncIterator[AsyncSandbox]:
    async with (
        LocalBackend(grace_seconds=300) as backend,
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as client,
        client.sandboxes.create() as sandbox,
    ):
        yield sandbox


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
async def test_a_kill_ends_the_process_the_same_way_whenever_it_comes(
    patient_sandbox: AsyncSandbox, delay: float
) -> None:
    for _ in range(3):  # each start races its box's setup differently
        proc = await patient_sandbox.run_code_background(SLEEPER)
        if delay:
            await asyncio.sleep(delay)
        assert await proc.kill()
        result = await proc.wait(timeout=60)  # far less than the 300 s grace period
        assert (result.status, result.exit_code) == ("killed", 143)


async def test_a_command_killed_at_once_ends_the_same_way(patient_sandbox: AsyncSandbox) -> None:
    proc = await patient_sandbox.commands.run("sleep 60", background=True)
    assert await proc.kill()
    result = await proc.wait(timeout=60)
    assert (result.status, result.exit_code) == ("killed", 143)


async def test_a_kill_of_a_process_that_ignores_sigterm_is_answered_and_goes_on(
    patient_sandbox: AsyncSandbox,
) -> None:
    """With a grace period longer than the server's answer waits, the kill is answered (it
    used to be a 500 after 10 s, which the client took for a server error) and goes on: the
    client's own wait for the end runs out (a ``WaitTimeoutError`` naming the kill), the
    record still says running, and a second kill is answered the same way."""
    proc = await patient_sandbox.commands.run("trap '' TERM; sleep 120", background=True)
    await asyncio.sleep(0.5)  # past its box's setup: the trap is in place
    for _ in range(2):
        with pytest.raises(WaitTimeoutError, match="killed but is still running"):
            await proc.kill(timeout=7)
    assert (await proc.refresh()).status == "running"
