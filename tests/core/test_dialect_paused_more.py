"""A paused sandbox's agent answering 5xx or dropping the connection (issue 16, item 10),
where the watcher is not the one asking: output read by offsets, the readiness wait of a
sandbox connected to while paused; and the answer of a pause that arrives just after the
resume (the control plane already says running): asked again once, not raised.

The fault proxy answers the agent's requests with a gateway's 502 (or drops them) while the
sandbox is paused, as the ``hopx`` dialect does; the local backend itself answers 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import hopx_async._connection as connection
from hopx_async import AsyncHopx, PollPolicy, RetryPolicy, ServerError

from .proxy import Fault, FaultProxy
from .waiting import until

pytestmark = pytest.mark.anyio

SANDBOX_GET = ("GET", "/v1/sandboxes/{sbx}")


async def _until_paused_is_seen(proxy: FaultProxy, before: int) -> None:
    """Until the client asked the control plane whether the sandbox is paused (which it
    does once a request's retries ran out on the agent's pause answer), and took the answer."""
    await until(lambda: proxy.count(*SANDBOX_GET) > before, "the control plane was asked")
    await asyncio.sleep(0.3)


def _client(backend: Any, proxy: FaultProxy) -> AsyncHopx:
    return AsyncHopx(
        api_key=backend.api_key,
        base_url=proxy.url,
        polling=PollPolicy(initial_interval=0.02, max_interval=0.1, long_poll=0.5),
        # a few retries: the connections the proxy dropped may still be in the client's pool
        retries=RetryPolicy(max_retries=4, initial_delay=0.01, max_delay=0.02),
    )


@pytest.mark.parametrize("answer", [502, 0])
async def test_output_by_offsets_keeps_following_while_paused(
    backend: Any, proxy: FaultProxy, answer: int
) -> None:
    async with _client(backend, proxy) as client, client.sandboxes.create("base") as sandbox:
        code = "import time; print('a', flush=True); time.sleep(0.5); print('b')"
        proc = await sandbox.run_code_background(code)
        chunks: list[str] = []

        async def follow() -> None:
            async for chunk in proc.output():
                chunks.append(chunk.text)

        following = asyncio.ensure_future(follow())
        await until(lambda: "".join(chunks).startswith("a"), "the first line was read")
        await sandbox.pause()
        before = proxy.count(*SANDBOX_GET)
        fault = proxy.inject(
            Fault("GET", r"/execute/processes/[^/]+$", answer, text="Bad Gateway", times=10**6)
        )
        await _until_paused_is_seen(proxy, before)
        assert not following.done(), "an unreachable paused agent does not end output()"
        fault.times = 0
        await sandbox.resume()
        await asyncio.wait_for(following, 15)
        assert "".join(chunks) == "a\nb\n"


async def test_readiness_waits_while_paused_past_its_timeout(
    backend: Any, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "READY_TIMEOUT", 0.2)
    async with _client(backend, proxy) as client, client.sandboxes.create("base") as sandbox:
        proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('done')")
        await sandbox.pause()
        before = proxy.count(*SANDBOX_GET)
        fault = proxy.inject(Fault("GET", r"/health$", 502, text="Bad Gateway", times=10**6))
        async with _client(backend, proxy) as other:
            again = await other.sandboxes.connect(sandbox.id)  # its agent not asked yet
            waiting = asyncio.ensure_future(again.process(proc.id).wait())
            await _until_paused_is_seen(proxy, before)
            await asyncio.sleep(1.0)  # well past READY_TIMEOUT
            assert not waiting.done(), "a paused sandbox is no agent that failed to boot"
            fault.times = 0
            await sandbox.resume()
            result = await asyncio.wait_for(waiting, 15)
        assert result.stdout == "done\n"


async def _late_pause_answers(client: AsyncHopx, proxy: FaultProxy, late_path: str) -> None:
    """A wait across a pause whose agent answers 502, then five more 502s once the control
    plane says running again (every attempt of one poll: the transport's retries included):
    the wait must still end with the process's result."""
    async with client.sandboxes.create("base") as sandbox:
        proc = await sandbox.run_code_background("import time; time.sleep(1); print('done')")
        await sandbox.pause()
        before = proxy.count(*SANDBOX_GET)
        paused = proxy.inject(Fault("GET", r"/execute/processes", 502, times=10**6))
        waiting = asyncio.ensure_future(proc.wait())
        await _until_paused_is_seen(proxy, before)
        resumed = [False]
        late = proxy.inject(Fault("GET", late_path, 502, times=5, when=lambda _: resumed[0]))
        # The agent answers as paused until the resume is answered, then five more times: no
        # request may get through in between (an answer from the agent ends the pause seen
        # before, and a 5xx after it is rightly raised: the next test).
        await sandbox.resume()
        paused.times, resumed[0] = 0, True
        result = await asyncio.wait_for(waiting, 30)
        assert late.hits == 5
        assert result.stdout == "done\n"


async def test_a_pause_answer_just_after_the_resume_is_asked_again(
    backend: Any, proxy: FaultProxy
) -> None:
    async with _client(backend, proxy) as client:
        await _late_pause_answers(client, proxy, r"/execute/processes")


async def test_the_resume_grace_counts_to_the_failed_polls_first_attempt(
    backend: Any, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late pause answers take the poll's retries longer than the grace (as on a loaded
    machine): the poll was sent within the grace, so it is asked again, not raised."""
    monkeypatch.setattr(connection, "RESUME_GRACE", 1.0)
    async with AsyncHopx(
        api_key=backend.api_key,
        base_url=proxy.url,
        polling=PollPolicy(initial_interval=0.02, max_interval=0.1, long_poll=0.5),
        retries=RetryPolicy(max_retries=4, initial_delay=0.75, max_delay=0.75),
    ) as client:
        await _late_pause_answers(client, proxy, r"/execute/processes$")


async def test_a_5xx_after_the_agent_answered_again_is_raised(
    backend: Any, proxy: FaultProxy
) -> None:
    """The pause seen before is over once the agent answers: a later 5xx on a running
    sandbox is not taken for the end of that pause."""
    async with _client(backend, proxy) as client, client.sandboxes.create("base") as sandbox:
        proc = await sandbox.run_code_background("import time; time.sleep(0.2)")
        await sandbox.pause()
        before = proxy.count(*SANDBOX_GET)
        paused = proxy.inject(Fault("GET", r"/execute/processes", 502, times=10**6))
        waiting = asyncio.ensure_future(proc.wait())
        await _until_paused_is_seen(proxy, before)
        paused.times = 0
        await sandbox.resume()
        await asyncio.wait_for(waiting, 15)
        later = await sandbox.run_code_background("import time; time.sleep(2)")
        # a 502 and its retries: the wait's poll fails once, on a running sandbox
        proxy.inject(Fault("GET", r"/execute/processes", 502, times=5))
        with pytest.raises(ServerError):
            await asyncio.wait_for(later.wait(), 15)
