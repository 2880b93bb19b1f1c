"""The client paces itself by the agent's rate-limit headers before the server refuses it
(issue 16, item 9 and part B): a burst of starts and the waits on them, against the ``hopx``
dialect with a small agent limit, draw no 429 at all and every result is right.

The 429s are counted on the way back through the fault proxy (it forwards everything as it
is and only looks at the statuses).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy
from hopx_async._ratelimit import POLLING, RateState
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import Dialect

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio

#: per sandbox: 12 agent requests per 1 s window, so 20 starts need two windows at least
AGENT_RATE = 12
WINDOW = 1.0
TASKS = 20


@pytest.fixture(scope="module")
def limited_backend() -> Iterator[LocalBackend]:
    dialect = Dialect.named(
        "hopx",
        boot_seconds=0.0,
        agent_rate_per_minute=AGENT_RATE,
        rate_window_seconds=WINDOW,
        control_rate_per_minute=10_000,
        create_rate_per_minute=1_000,
    )
    with LocalBackend.in_thread(dialect=dialect, isolation="none") as running:
        yield running


def _headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


async def test_a_burst_of_starts_and_waits_draws_no_429(limited_backend: LocalBackend) -> None:
    statuses: Counter[int] = Counter()
    async with FaultProxy(limited_backend.base_url) as proxy:

        def seen(key: str, status: int, data: Any) -> tuple[int, Any]:
            statuses[status] += 1
            return status, data

        proxy.rewrite_answer = seen
        async with (
            AsyncHopx(
                api_key=limited_backend.api_key,
                base_url=proxy.url,
                polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
            ) as client,
            client.sandboxes.create("code-interpreter") as sandbox,
        ):
            procs = await asyncio.gather(
                *(
                    sandbox.run_code_background(f"echo task-{i}", language="bash")
                    for i in range(TASKS)
                )
            )
            results = await client.wait_all(procs, timeout=60)
        assert [r.status for r in results] == ["completed"] * TASKS
        assert [r.stdout for r in results] == [f"task-{i}\n" for i in range(TASKS)]
        assert statuses[429] == 0, f"the server refused {statuses[429]} requests"
        # the limit did bind: more agent requests than one window allows were answered
        agent = sum(n for key, n in proxy.counts.items() if not key.startswith("/v1"))
        assert agent > AGENT_RATE


def test_in_flight_requests_count_against_what_remains() -> None:
    state = RateState(clock=lambda: 100.0)
    state.update(_headers(10, 2, 105))
    assert state.delay() == 0.0
    state.begin()
    state.begin()
    assert state.available() == 0
    assert state.delay() == pytest.approx(6.0)  # until the reset, plus the margin
    state.end(_headers(10, 1, 105))
    state.end(_headers(10, 0, 105))
    assert (state.available(), state.inflight) == (0, 0)


def test_answers_out_of_order_never_raise_what_remains() -> None:
    state = RateState(clock=lambda: 100.0)
    state.update(_headers(10, 3, 105))
    state.update(_headers(10, 5, 105))  # an earlier request's answer, arriving late
    assert state.remaining == 3
    state.update(_headers(10, 9, 104))  # a window that has ended already
    assert (state.remaining, state.reset) == (3, 105.0)
    state.update(_headers(10, 9, 110))  # the next window
    assert (state.remaining, state.reset) == (9, 110.0)


def test_a_new_window_offers_the_whole_limit() -> None:
    now = [100.0]
    state = RateState(clock=lambda: now[0])
    state.update(_headers(10, 0, 105))
    assert state.available() == 0
    now[0] = 106.5  # past the reset and its margin
    assert state.available() == 10
    assert state.delay() == 0.0


def test_a_429_holds_every_request_of_the_scope() -> None:
    state = RateState(clock=lambda: 100.0)
    state.update(_headers(10, 4, 101))
    state.refused(3.0)
    assert state.available() == 0
    assert state.delay() == pytest.approx(3.0)


def test_polls_leave_a_reserve_and_spread_what_is_free() -> None:
    state = RateState(clock=lambda: 100.0)
    state.update(_headers(100, 50, 109))  # 10 s to the reset (with the margin)
    state.other_at = 100.0  # a start went out just now
    # 50 free, 10 kept for starts, a quarter of the other 40 for polls: one per second
    assert state.poll_spacing() == pytest.approx(1.0)
    assert state.poll_delay() == 0.0
    state.update(_headers(100, 10, 109))  # only the reserve is left: polls wait the reset
    assert state.poll_delay() == pytest.approx(10.0)
    assert state.poll_spacing() == pytest.approx(10.0)
    assert state.delay() == 0.0, "other requests may still use the reserve"


def test_without_other_requests_polls_may_spend_all_that_is_free() -> None:
    now = [100.0]
    state = RateState(clock=lambda: now[0])
    state.update(_headers(100, 10, 109))
    state.other_at = 100.0
    assert state.poll_delay() == pytest.approx(10.0)
    now[0] = 101.5  # the starts are over: the reserve is for polls too, spread to the reset
    assert state.poll_delay() == 0.0
    assert state.poll_spacing() == pytest.approx(8.5 / 10)


async def test_a_watchers_requests_are_polls_and_others_are_not() -> None:
    state = RateState(clock=lambda: 100.0)
    with state.sending():
        assert (state.inflight, state.others) == (1, 1)

    async def poll() -> None:
        POLLING.set(True)
        with state.sending():
            assert (state.inflight, state.others) == (1, 0)

    state.other_at = None
    await asyncio.ensure_future(poll())
    assert (state.inflight, state.others, state.other_at) == (0, 0, None)
