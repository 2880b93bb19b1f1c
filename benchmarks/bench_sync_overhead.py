"""Per-call cost of the blocking facade, against a bare thread hop measured in the same run.

    python benchmarks/bench_sync_overhead.py [--rounds 7] [--calls 3000] [--real-calls 300]

Three ways to make the same call, each timed per call, in interleaved rounds:

- ``sync facade``: the generated ``hopx_sync`` method (one hop into the client's loop thread);
- ``bare hop``: ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` with the same async
  call on the same loop thread: what a generic sync-over-async wrapper pays (the baseline);
- ``async, awaited``: the async call awaited directly on the loop (no hop at all).

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

from hopx_async.local import LocalBackend
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
    client: Hopx,
    sync_call: Callable[[], Any],
    make_coro: Callable[[], Any],
    calls: int,
    rounds: int,
) -> dict[str, float]:
    """Median per-call seconds of each way, over interleaved rounds."""
    loop = client._runner.loop
    samples: dict[str, list[float]] = {"sync facade": [], "bare hop": [], "async, awaited": []}
    # warm up every path
    per_call_sync(sync_call, max(10, calls // 20))
    per_call_sync(
        lambda: asyncio.run_coroutine_threadsafe(make_coro(), loop).result(), max(10, calls // 20)
    )
    for _ in range(rounds):
        samples["sync facade"].append(per_call_sync(sync_call, calls))
        samples["bare hop"].append(
            per_call_sync(
                lambda: asyncio.run_coroutine_threadsafe(make_coro(), loop).result(), calls
            )
        )
        samples["async, awaited"].append(
            asyncio.run_coroutine_threadsafe(_awaited(make_coro, calls), loop).result()
        )
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
    ):
        proc = sandbox.run_code_background("print('done')")
        proc.wait(timeout=60)
        rows = [
            (
                "trivial: proc.wait() (finished)",
                measure(client, proc.wait, proc._async.wait, args.calls, args.rounds),
            ),
            (
                "real: sandbox.get_process(id)",
                measure(
                    client,
                    lambda: sandbox.get_process(proc.id),
                    lambda: sandbox._async.get_process(proc.id),
                    args.real_calls,
                    args.rounds,
                ),
            ),
        ]

    print(f"median per-call cost over {args.rounds} interleaved rounds (microseconds)")
    header = (
        f"{'call':<34} {'sync facade':>12} {'bare hop':>10} {'async':>9} "
        f"{'facade/bare':>12} {'facade-async':>13}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, m in rows:
        ratio = m["sync facade"] / m["bare hop"]
        worst = max(worst, ratio)
        print(
            f"{name:<34} {m['sync facade'] * 1e6:>12.1f} {m['bare hop'] * 1e6:>10.1f} "
            f"{m['async, awaited'] * 1e6:>9.1f} {ratio:>12.2f} "
            f"{(m['sync facade'] - m['async, awaited']) * 1e6:>13.1f}"
        )
    verdict = "within" if worst <= GOAL else "ABOVE"
    print(f"\nfacade/bare-hop ratio: worst {worst:.2f} ({verdict} the {GOAL}x goal)")


if __name__ == "__main__":
    main()
