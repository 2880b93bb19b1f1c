"""Issue 16 items 9 and 3: output() followers share the sandbox's watcher, 429s during waits
back off and go on, starts answered 429 are retried, and a sliding tail is followed.

The strict dialects are not merged yet: the fault proxy stands in (its ``hide_features``
mode is the service without extensions; 429s without hints are injected faults).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, OutputChunk, PollPolicy, RetryPolicy

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio

LIST = "GET /execute/processes"
CODE = "import time\nfor i in range(4):\n    print(i, flush=True); time.sleep(0.15)"


def _client(backend: Any, url: str, retries: int = 4) -> AsyncHopx:
    return AsyncHopx(
        api_key=backend.api_key,
        base_url=url,
        retries=RetryPolicy(max_retries=retries, initial_delay=0.01, max_delay=0.05),
        polling=PollPolicy(initial_interval=0.05, max_interval=0.2),
    )


async def _follow(proc: Any) -> str:
    return "".join([c.text async for c in proc.output()])


async def test_ten_followers_share_one_list_per_tick(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        procs = [await sandbox.run_code_background(CODE) for _ in range(10)]
        texts = await asyncio.gather(*(_follow(p) for p in procs))
        assert texts == ["0\n1\n2\n3\n"] * 10
        assert proxy.count("GET", "/execute/processes/{proc}") == 0
        assert proxy.counts[LIST] == sandbox.watcher_stats.polls, "one list per watcher poll"
        assert proxy.counts[LIST] < 40, proxy.counts[LIST]


async def test_wait_all_survives_429s_without_hints(backend: Any) -> None:
    """More 429s without hints in a row than the transport retries: the waits go on."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url, retries=2) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        procs = [await sandbox.run_code_background(CODE) for _ in range(10)]
        proxy.inject(Fault("GET", r"/execute/processes$", 429, {"error": "slow"}, times=9))
        results = await asyncio.wait_for(client.wait_all(procs), 30)
        assert [r.status for r in results] == ["completed"] * 10
        assert [r.stdout for r in results] == ["0\n1\n2\n3\n"] * 10
        assert proxy.faults[0].hits == 9


async def test_start_answered_429_is_retried(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proxy.inject(Fault("POST", r"/execute/background$", 429, {"error": "slow"}, times=2))
        proc = await sandbox.run_code_background("print('x')")
        assert (await proc.wait(timeout=30)).stdout == "x\n"
        assert proxy.count("POST", "/execute/background") == 3


async def test_start_429_waits_past_the_advertised_reset(backend: Any) -> None:
    """A reset rounded down to the second: the retry goes out after it, with a margin."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        import time

        reset = str(int(time.time()))
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        fault = Fault("POST", r"/execute/background$", 429, {"error": "slow"}, headers=headers)
        proxy.inject(fault)
        sent = time.time()
        await sandbox.run_code_background("print('x')")
        assert time.time() >= int(reset) + 0.5 and time.time() - sent < 5
        assert proxy.count("POST", "/execute/background") == 2


LINE = 100_000
BIG = (
    "import sys, time\n"
    "for i in range(30):\n"
    f"    sys.stdout.write(f'{{i:05d}}' + 'x' * {LINE - 6} + '\\n'); sys.stdout.flush()\n"
    "    time.sleep(0.04)\n"
)


async def test_output_follows_a_sliding_tail(backend: Any) -> None:
    """3,000,000 bytes against a list that carries the last 1 MiB: every line once, the last
    included, and a gap marked where the tail slid past what was yielded."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background(BIG)
        chunks: list[OutputChunk] = [c async for c in proc.output()]
        text = "".join(c.text for c in chunks)
        numbers = [line[:5] for line in text.splitlines() if line[:5].isdigit()]
        assert numbers[-1] == "00029", "followed to the end"
        whole = [n for n in numbers if len(n) == 5]
        assert len(whole) == len(set(whole)), "no line twice"
        if len(set(whole)) < 30:
            assert any(c.gap for c in chunks), "lost output is marked"
        result = await proc.wait()
        assert result.stdout_truncated and len(result.stdout.encode()) <= 1 << 20


async def test_wait_flags_a_truncated_tail(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        _client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("print('y' * 3_000_000)")
        result = await proc.wait(timeout=60)
        assert result.stdout_truncated is True and result.stderr_truncated is False
        assert result.output_available


@pytest.mark.parametrize(("seen", "now"), [(1_550_000, 1_750_000), (1_550_000, 1_560_000)])
def test_tail_follower_finds_where_a_tail_ending_mid_line_went_on(seen: int, now: int) -> None:
    """The last record seen ends in the middle of a long line of one character (a poll that
    caught a partial write): the next tail goes on from there, every line once, no gap."""
    from hopx_async._models import ProcessInfo
    from hopx_async._output import TailFollower

    stream = "".join(f"{i:05d}" + "x" * (LINE - 6) + "\n" for i in range(30))
    cut = 1 << 20
    follow = TailFollower()

    def record(upto: int) -> ProcessInfo:
        text = stream[:upto]
        return ProcessInfo(
            process_id="p", status="running", stdout=text[-cut:], stdout_truncated=len(text) > cut
        )

    first = follow.take(record(seen))
    second = follow.take(record(now))
    assert [c.gap for c in second] == [False]
    assert "".join(c.text for c in first + second) == stream[seen - cut : now], "each once"
