"""The hand-written loop runner of hopx_sync, without any server."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from hopx_sync import _runner
from hopx_sync._runner import Runner


@pytest.fixture
def runner() -> Iterator[Runner]:
    r = Runner()
    yield r
    r.close()


class Boom(ValueError):
    pass


async def _boom() -> None:
    await asyncio.sleep(0)
    raise Boom("from the loop")


def test_returns_the_result(runner: Runner) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert runner.run(answer()) == 42


def test_runs_plain_awaitables(runner: Runner) -> None:
    class Later:
        def __await__(self):  # type: ignore[no-untyped-def]
            return asyncio.sleep(0, result="later").__await__()

    assert runner.run(Later()) == "later"


def test_exception_keeps_its_class_and_the_callers_line(runner: Runner) -> None:
    callers_line = sys._getframe().f_lineno + 2
    with pytest.raises(Boom, match="from the loop") as excinfo:
        runner.run(_boom())
    frames = traceback.extract_tb(excinfo.value.__traceback__)
    assert any(f.filename == __file__ and f.lineno == callers_line for f in frames)
    assert any(f.name == "_boom" for f in frames), "the traceback goes down into the coroutine"


def test_calls_from_many_threads_overlap(runner: Runner) -> None:
    """Each call waits until all of them are inside the loop at once: serialised calls
    would never get there (and would fail on the inner timeout)."""
    n = 8
    inside = 0
    all_in = asyncio.Event()

    async def meet() -> int:
        nonlocal inside
        inside += 1
        if inside == n:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)
        return inside

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(runner.run(meet()))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [n] * n


def test_call_from_inside_a_running_event_loop(runner: Runner) -> None:
    """As in Jupyter: a coroutine run by asyncio.run makes a blocking call."""

    async def answer() -> str:
        return "ok"

    async def notebook_cell() -> str:
        return runner.run(answer())

    assert asyncio.run(notebook_cell()) == "ok"


def test_call_from_the_loop_thread_raises_instead_of_deadlocking(runner: Runner) -> None:
    async def inner() -> None:
        await asyncio.sleep(0)

    async def reentrant() -> None:
        runner.run(inner())  # would wait for itself forever

    with pytest.raises(RuntimeError, match="own event-loop thread"):
        runner.run(reentrant())
    assert runner.run(asyncio.sleep(0, result=1)) == 1  # still usable


def test_keyboard_interrupt_cancels_the_task_and_the_runner_stays_usable(
    runner: Runner,
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    started = threading.Event()
    cancelled = threading.Event()

    async def long_wait() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt() -> None:
        started.wait(10)
        time.sleep(0.1)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        runner.run(long_wait())
    assert cancelled.is_set(), "the inner task was cancelled before the interrupt was re-raised"
    assert runner.run(asyncio.sleep(0, result="again")) == "again"


def test_close_stops_the_thread_and_cancels_what_runs(runner: Runner) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    runner.run(spawn())
    thread = runner.thread
    runner.close()
    assert not thread.is_alive()
    assert thread not in threading.enumerate()
    assert cancelled.is_set()
    assert runner.loop.is_closed()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(coro)
    runner.close()  # twice is harmless


def test_a_dropped_runner_stops_its_thread() -> None:
    r = Runner()
    thread = r.thread
    del r
    thread.join(10)
    assert not thread.is_alive()


def test_sync_iterator_hops_per_item_and_closes_the_generator(runner: Runner) -> None:
    closed = threading.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    it = _runner.iterate(runner, numbers())
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    assert isinstance(it, _runner.SyncIterator)
    it.close()
    assert closed.is_set()
    assert list(it) == []

    doubled = _runner.iterate_wrapped(runner, numbers(), lambda i: i * 2)
    assert list(doubled) == [2 * i for i in range(100)]


def test_default_runner_is_shared_and_thread_safe() -> None:
    seen: list[Runner] = []
    threads = [
        threading.Thread(target=lambda: seen.append(_runner.default_runner())) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in seen}) == 1
    assert seen[0] is _runner.default_runner()
    assert seen[0].thread.daemon


def test_sync_iterator_hands_over_ready_items_in_batches(runner: Runner) -> None:
    async def ready(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    hops = 0
    real = runner.run

    def counting(aw: Any) -> Any:
        nonlocal hops
        hops += 1
        return real(aw)

    runner.run = counting  # type: ignore[method-assign]
    assert list(_runner.iterate(runner, ready(1000))) == list(range(1000))
    assert hops <= 1000 // _runner.SyncIterator.BATCH + 2


def test_sync_iterator_delivers_items_before_a_later_error(runner: Runner) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise Boom("third")

    it = _runner.iterate(runner, failing())
    assert next(it) == 1
    assert next(it) == 2
    with pytest.raises(Boom, match="third"):
        next(it)
    assert list(it) == []


async def _stuck_after_one(closed: threading.Event) -> AsyncIterator[int]:
    """Yields 1, then hangs; sets ``closed`` when it is closed."""
    try:
        yield 1
        await asyncio.sleep(3600)
        yield 2
    finally:
        closed.set()


def test_sync_iterator_close_stops_a_fetch_in_flight(runner: Runner) -> None:
    closed = threading.Event()

    it = _runner.iterate(runner, _stuck_after_one(closed))
    assert next(it) == 1  # the fetch of the second item is now in flight on the loop
    assert isinstance(it, _runner.SyncIterator)
    it.close()
    assert closed.is_set()


def test_a_dropped_sync_iterator_is_closed_on_the_loop(runner: Runner) -> None:
    closed = threading.Event()

    it = _runner.iterate(runner, _stuck_after_one(closed))
    assert next(it) == 1
    del it
    assert closed.wait(10)


def test_relayed_callbacks_run_on_the_waiting_thread_in_order(runner: Runner) -> None:
    seen: list[tuple[int, threading.Thread]] = []
    relay = _runner.Relay()

    async def produce(report: Any) -> str:
        for i in range(5):
            report(i)
            await asyncio.sleep(0)
        return "done"

    def record(i: int) -> None:
        seen.append((i, threading.current_thread()))

    assert runner.run(produce(relay(record)), relay=relay) == "done"
    assert seen == [(i, threading.current_thread()) for i in range(5)]
    assert relay(None) is None


def test_a_failing_relayed_callback_cancels_the_call(runner: Runner) -> None:
    cancelled = threading.Event()
    relay = _runner.Relay()

    async def produce(report: Any) -> None:
        report()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def fail() -> None:
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        runner.run(produce(relay(fail)), relay=relay)
    assert cancelled.is_set(), "the call was cancelled before the error was raised"
    assert runner.run(asyncio.sleep(0, result=1)) == 1


def test_a_client_runner_closes_its_client_when_collected() -> None:
    import gc
    import warnings

    from hopx_async import AsyncHopx

    client = AsyncHopx(api_key="k", base_url="http://127.0.0.1:9")
    r = Runner.for_client(client)
    thread = r.thread
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del r
        gc.collect()
        thread.join(10)
    assert not thread.is_alive()
    assert client.closed
    assert [str(w.message).split(" created at ")[0] for w in caught] == [
        "unclosed hopx_sync.Hopx client"
    ]
