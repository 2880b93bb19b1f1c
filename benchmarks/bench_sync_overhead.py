"""Per-call cost of the blocking facade, against a bare thread hop measured in the same run.

    python benchmarks/bench_sync_overhead.py [--rounds 7] [--calls 3000] [--real-calls 300]

Four ways to make the same call, each timed per call, in interleaved rounds:

- ``sync facade``: the generated ``hopx_sync`` method (one hop into the client's loop thread);
- ``LoopThread.run``: the shared loop-thread helper (:mod:`hopx_async.loopthread`) the facade
  runs on, called directly with the async call;
- ``bare hop``: ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` on that helper's
  loop thread: what a generic sync-over-async wrapper pays (the baseline);
- ``async, awaited``: the async call awaited directly on the loop (no hop at all).

The facade's client and the async client of the three peers are separate but alike: each
lives on a :class:`~hopx_async.loopthread.LoopThread` of its own, against the same server.
Two calls: a trivial one (``proc.wait()`` on a finished process: a coroutine that returns
the cached result without I/O, so the hop is all there is) and a real request
(``sandbox.get_process(id)``, one HTTP round trip to the embedded local backend).
The goal is a facade costing at most 1.2 times the bare hop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hopx_async import AsyncHopx
from hopx_async.local import LocalBackend
from hopx_async.loopthread import LoopThread
from hopx_sync import Hopx

GOAL = 1.2


def per_call_sync(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


async def _awaited(make: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await make()
    return (time.perf_counter() - start) / calls


def measure(
    lt: LoopThread,
    sync_call: Callable[[], Any],
    make_coro: Callable[[], Any],
    calls: int,
    rounds: int,
) -> dict[str, float]:
    """Median per-call seconds of each way, over interleaved rounds."""
    loop = lt.loop
    ways: dict[str, Callable[[], Any]] = {
        "sync facade": sync_call,
        "LoopThread.run": lambda: lt.run(make_coro()),
        "bare hop": lambda: asyncio.run_coroutine_threadsafe(make_coro(), loop).result(),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*ways, "async, awaited"]}
    for fn in ways.values():  # warm up every path
        per_call_sync(fn, max(10, calls // 20))
    for _ in range(rounds):
        for name, fn in ways.items():
            samples[name].append(per_call_sync(fn, calls))
        samples["async, awaited"].append(lt.run(_awaited(make_coro, calls)))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000, help="trivial calls per round")
    parser.add_argument("--real-calls", type=int, default=300, help="HTTP calls per round")
    args = parser.parse_args()

    with (
        LocalBackend.in_thread() as backend,
        Hopx(api_key=backend.api_key, base_url=backend.base_url) as client,
        client.sandboxes.create("code-interpreter") as sandbox,
        LoopThread() as lt,
    ):
        proc = sandbox.run_code_background("print('done')")
        proc.wait(timeout=60)
        peer = AsyncHopx(api_key=backend.api_key, base_url=backend.base_url)
        peer_sandbox = lt.run(peer.sandboxes.connect(sandbox.id))
        peer_proc = peer_sandbox.process(proc.id)
        lt.run(peer_proc.wait(timeout=60))
        rows = [
            (
                "trivial: proc.wait() (finished)",
                measure(lt, proc.wait, peer_proc.wait, args.calls, args.rounds),
            ),
            (
                "real: sandbox.get_process(id)",
                measure(
                    lt,
                    lambda: sandbox.get_process(proc.id),
                    lambda: peer_sandbox.get_process(proc.id),
                    args.real_calls,
                    args.rounds,
                ),
            ),
        ]
        lt.run(peer.aclose())

    print(f"median per-call cost over {args.rounds} interleaved rounds (microseconds)")
    header = (
        f"{'call':<34} {'sync facade':>12} {'LoopThread':>11} {'bare hop':>10} {'async':>9} "
        f"{'facade/bare':>12} {'facade-async':>13}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, m in rows:
        ratio = m["sync facade"] / m["bare hop"]
        worst = max(worst, ratio)
        print(
            f"{name:<34} {m['sync facade'] * 1e6:>12.1f} {m['LoopThread.run'] * 1e6:>11.1f} "
            f"{m['bare hop'] * 1e6:>10.1f} "
            f"{m['async, awaited'] * 1e6:>9.1f} {ratio:>12.2f} "
            f"{(m['sync facade'] - m['async, awaited']) * 1e6:>13.1f}"
        )
    verdict = "within" if worst <= GOAL else "ABOVE"
    print(f"\nfacade/bare-hop ratio: worst {worst:.2f} ({verdict} the {GOAL}x goal)")


if __name__ == "__main__":
    main()
