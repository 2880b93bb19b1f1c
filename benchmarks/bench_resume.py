"""Resume benchmark: what a resumable ``run_many`` costs, fresh and resumed halfway.

N tasks (``echo out-i``) over M sandboxes of the in-process ``LocalBackend`` (on its own
thread and event loop, behind a counting proxy), ``max_concurrency`` C, with a manifest:

1. **fresh**: an empty manifest; every task is started and waited on.
2. **resumed halfway**: the fresh run's manifest cut right after the line where half of
   the tasks had ended, as a driver killed at that moment would have left it; run again
   with the same tasks and sandboxes: half come from the manifest, the starts that were in
   flight or running are found (by name, or by process id) and waited on, the rest started.

Both run back to back in the same sandboxes, after a run of the same tasks without a
manifest (what the manifest itself costs). For each it prints the wall time, the HTTP
requests the server received (starts, list polls, others), the CPU seconds of the client's
thread (the event loop running ``run_many``) and what the run reports (``BatchStats``).

    python benchmarks/bench_resume.py [--tasks N] [--sandboxes M] [--concurrency C] [--quick]

Timings on a shared machine are noisy: read the request counts and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench_fanout import ServerThread  # noqa: E402

from hopx_async import AsyncHopx, BatchStats, PollPolicy, Task  # noqa: E402

START_ROUTES = ("POST /commands/background", "POST /execute/background")
LIST_ROUTE = "GET /execute/processes"


def tasks_of(count: int) -> list[Task]:
    return [Task(command=f"echo out-{i}", name=f"t{i}") for i in range(count)]


def cut_halfway(source: Path, target: Path, tasks: int) -> None:
    """``source`` up to (and with) the line on which half of the tasks had ended."""
    ended: set[int] = set()
    kept: list[str] = []
    for line in source.read_text().splitlines():
        kept.append(line)
        record = json.loads(line)
        if record.get("kind") == "ended":
            ended.add(record["task"])
            if len(ended) >= tasks // 2:
                break
    target.write_text("\n".join(kept) + "\n")


async def one_run(
    server: ServerThread,
    url: str,
    sandbox_ids: list[str],
    manifest: Path | None,
    tasks: list[Task],
    concurrency: int,
    proxy: Any,
) -> dict[str, Any]:
    async with AsyncHopx(
        api_key=server.backend.api_key,
        base_url=url,
        polling=PollPolicy(initial_interval=0.05, max_interval=0.5),
    ) as client:
        boxes = [await client.sandboxes.connect(i) for i in sandbox_ids]
        for box in boxes:  # readiness outside the measurement
            await box.list_processes()
        server.settle(proxy)
        before = Counter(server.call(lambda: Counter(proxy.counts)))
        stats = BatchStats()
        cpu, wall = time.thread_time(), time.monotonic()
        results = await client.run_many(
            tasks, sandboxes=boxes, max_concurrency=concurrency, manifest=manifest, stats=stats
        )
        cpu, wall = time.thread_time() - cpu, time.monotonic() - wall
        server.settle(proxy)
        after = Counter(server.call(lambda: Counter(proxy.counts)))
    wrong = [i for i, r in enumerate(results) if r.stdout != f"out-{i}\n"]
    if wrong:
        raise SystemExit(f"wrong output for tasks {wrong[:10]}")
    sent = after - before
    starts = sum(sent[route] for route in START_ROUTES)
    return {
        "wall": wall,
        "cpu": cpu,
        "starts": starts,
        "lists": sent[LIST_ROUTE],
        "other": sum(sent.values()) - starts - sent[LIST_ROUTE],
        "stats": stats,
    }


async def bench(server: ServerThread, args: argparse.Namespace) -> list[tuple[str, Any]]:
    proxy = server.proxy()
    tasks = tasks_of(args.tasks)
    async with AsyncHopx(api_key=server.backend.api_key, base_url=proxy.url) as owner:
        made = [await owner.sandboxes.create("code-interpreter") for _ in range(args.sandboxes)]
        ids = [box.id for box in made]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                fresh_file, half_file = Path(tmp) / "fresh.jsonl", Path(tmp) / "half.jsonl"
                plain = await one_run(server, proxy.url, ids, None, tasks, args.concurrency, proxy)
                fresh = await one_run(
                    server, proxy.url, ids, fresh_file, tasks, args.concurrency, proxy
                )
                cut_halfway(fresh_file, half_file, args.tasks)
                resumed = await one_run(
                    server, proxy.url, ids, half_file, tasks, args.concurrency, proxy
                )
        finally:
            await asyncio.gather(*(box.kill() for box in made), return_exceptions=True)
    return [("no manifest", plain), ("fresh", fresh), ("resumed halfway", resumed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sandboxes", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.sandboxes, args.concurrency = 40, 4, 16
    server = ServerThread()
    try:
        server.start()
        rows = asyncio.run(bench(server, args))
    finally:
        server.stop()
    print(
        f"{args.tasks} tasks over {args.sandboxes} sandboxes, max_concurrency "
        f"{args.concurrency}, local backend (requests as the server received them)"
    )
    head = ("run", "wall s", "client CPU s", "starts", "list polls", "other", "from manifest",
            "re-attached", "started")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for name, row in rows:
        st = row["stats"]
        cells = (name, f"{row['wall']:.2f}", f"{row['cpu']:.2f}", row["starts"], row["lists"],
                 row["other"], st.from_manifest, st.reattached, st.started)  # fmt: skip
        print(" | ".join(str(c) for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
