"""Waiting on many processes from sync code: one batch call against one hop per process.

    python benchmarks/bench_sync_batch.py [--processes 1000] [--sandboxes 10] [--rounds 7]

The processes (``echo``, in bash) are started and finished before anything is timed, so
what is measured is the client-side cost of collecting N results, not the processes:

- ``async wait_all``: ``await AsyncHopx.wait_all(handles)`` on an event loop (the target), the
  loop of a :class:`hopx_async.loopthread.LoopThread`, the helper the facade runs on;
- ``sync wait_all``: ``Hopx.wait_all(handles)`` of the generated facade: the whole batch runs
  on the client's loop thread, so one thread hop is paid for the batch;
- ``sync, one wait() each``: ``[h.wait() for h in handles]``: one hop per process, what a
  hand-written blocking loop over the documented API pays.

Each round uses fresh clients and fresh handles (made from the process ids, as after a
reconnect), so nothing is cached between rounds; the server's requests are the same for
all three (one process list per sandbox per tick). Medians are printed with the ratio to
the async figure. The machine is shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hopx_async import AsyncHopx
from hopx_async.local import LocalBackend
from hopx_async.loopthread import LoopThread
from hopx_sync import Hopx


def prepare(url: str, key: str, sandboxes: int, processes: int) -> dict[str, list[str]]:
    """Start the processes, wait for them, and return the process ids by sandbox."""
    with Hopx(api_key=key, base_url=url) as client:
        boxes = [client.sandboxes.create("base") for _ in range(sandboxes)]
        procs = [
            boxes[i % sandboxes].run_code_background(f"echo {i}", language="bash")
            for i in range(processes)
        ]
        results = client.wait_all(procs, check=True)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(processes)]
        ids: dict[str, list[str]] = {b.id: [] for b in boxes}
        for proc in procs:
            ids[proc.sandbox.id].append(proc.id)
        return ids


async def async_wait_all(url: str, key: str, ids: dict[str, list[str]]) -> float:
    async with AsyncHopx(api_key=key, base_url=url) as client:
        handles = []
        for sid, pids in ids.items():
            sandbox = await client.sandboxes.connect(sid)
            await sandbox.get_info()
            handles += [sandbox.process(pid) for pid in pids]
        start = time.perf_counter()
        results = await client.wait_all(handles)
        elapsed = time.perf_counter() - start
    assert len(results) == len(handles)
    return elapsed


def sync_wait(url: str, key: str, ids: dict[str, list[str]], *, batch: bool) -> float:
    with Hopx(api_key=key, base_url=url) as client:
        handles = []
        for sid, pids in ids.items():
            sandbox = client.sandboxes.connect(sid)
            sandbox.get_info()
            handles += [sandbox.process(pid) for pid in pids]
        start = time.perf_counter()
        results = client.wait_all(handles) if batch else [h.wait() for h in handles]
        elapsed = time.perf_counter() - start
    assert len(results) == len(handles)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--sandboxes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with LocalBackend.in_thread() as backend, LoopThread() as lt:
        url, key = backend.base_url, backend.api_key
        t0 = time.perf_counter()
        ids = prepare(url, key, args.sandboxes, args.processes)
        print(
            f"{args.processes} finished processes over {args.sandboxes} sandboxes "
            f"(prepared in {time.perf_counter() - t0:.1f}s); {args.rounds} interleaved rounds"
        )
        samples: dict[str, list[float]] = {
            "async wait_all": [],
            "sync wait_all": [],
            "sync, one wait() each": [],
        }
        for _ in range(args.rounds):
            samples["async wait_all"].append(lt.run(async_wait_all(url, key, ids)))
            samples["sync wait_all"].append(sync_wait(url, key, ids, batch=True))
            samples["sync, one wait() each"].append(sync_wait(url, key, ids, batch=False))

    base = statistics.median(samples["async wait_all"])
    print(f"{'way':<24} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'vs async':>9}")
    print("-" * 63)
    for way, values in samples.items():
        med = statistics.median(values)
        print(
            f"{way:<24} {med * 1e3:>10.1f} {min(values) * 1e3:>8.1f} "
            f"{max(values) * 1e3:>8.1f} {med / base:>8.2f}x"
        )


if __name__ == "__main__":
    main()
