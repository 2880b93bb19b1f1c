"""Fan out 50 background tasks over 5 sandboxes, watch them finish, print a summary.

    python examples/demo.py                                   # embedded local backend
    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/demo.py  # any HopX server

Without ``HOPX_BASE_URL`` the demo starts the embedded local backend in-process, so it needs
no account and no network. Every sandbox's processes are watched with one coalesced poll per
tick, whatever their number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from hopx_async import AsyncBackgroundProcess, AsyncHopx, AsyncSandbox, ProcessResult

SANDBOXES = 5
TASKS = 50

#: a task: sleep a while, print a result; a few fail on purpose to show failures counted
TASK_CODE = """
import time, sys
time.sleep({seconds:.2f})
if {fail}:
    sys.exit("task {n} failed on purpose")
print("task {n}: {n} squared is", {n} * {n})
"""


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[str, str | None]]:
    """The server to use: ``HOPX_BASE_URL`` if set, else an embedded local backend."""
    if os.environ.get("HOPX_BASE_URL"):
        yield os.environ["HOPX_BASE_URL"], os.environ.get("HOPX_API_KEY")
        return
    from hopx_async.local import LocalBackend

    async with LocalBackend() as backend:
        print(f"(started the embedded local backend at {backend.base_url})")
        yield backend.base_url, backend.api_key


class ProgressBar:
    """One line updated in place on a terminal; a plain line every 10% when piped."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, done: int, total: int, result: ProcessResult) -> None:
        self.failed += not result.ok
        if sys.stdout.isatty():
            width = 30
            filled = width * done // total
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done:3d}/{total}"
            sys.stdout.write(f"\r{bar}, {self.failed} failed" + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 10) == 0:
            sys.stdout.write(f"{done}/{total} done, {self.failed} failed\n")
        sys.stdout.flush()


async def main() -> None:
    rng = random.Random(7)
    started = time.monotonic()
    async with server() as (base_url, api_key), AsyncHopx(api_key, base_url) as client:
        sandboxes: list[AsyncSandbox] = list(
            await asyncio.gather(
                *(client.sandboxes.create("code-interpreter") for _ in range(SANDBOXES))
            )
        )
        try:
            print(f"{SANDBOXES} sandboxes ready in {time.monotonic() - started:.1f}s")
            specs = [
                (n, sandboxes[n % SANDBOXES], rng.uniform(0.2, 2.0), n % 17 == 16)
                for n in range(TASKS)
            ]
            procs: list[AsyncBackgroundProcess] = list(
                await asyncio.gather(
                    *(
                        sbx.run_code_background(
                            TASK_CODE.format(n=n, seconds=secs, fail=fail), name=f"task-{n}"
                        )
                        for n, sbx, secs, fail in specs
                    )
                )
            )
            print(f"{TASKS} background tasks started; waiting for them:")
            t0 = time.monotonic()
            results = await client.wait_all(procs, timeout=120, on_progress=ProgressBar())
            elapsed = time.monotonic() - t0
            print_summary(sandboxes, procs, results, elapsed)
        finally:
            await asyncio.gather(*(s.kill() for s in sandboxes), return_exceptions=True)


def print_summary(
    sandboxes: list[AsyncSandbox],
    procs: list[AsyncBackgroundProcess],
    results: list[ProcessResult],
    elapsed: float,
) -> None:
    rows: list[tuple[Any, ...]] = []
    for sbx in sandboxes:
        mine = [r for p, r in zip(procs, results, strict=True) if p.sandbox is sbx]
        times = [r.execution_time or 0.0 for r in mine]
        rows.append(
            (
                sbx.id,
                len(mine),
                sum(r.ok for r in mine),
                sum(not r.ok for r in mine),
                sum(times) / len(times) if times else 0.0,
                max(times, default=0.0),
            )
        )
    header = f"{'sandbox':<24} {'tasks':>5} {'ok':>4} {'failed':>6} {'mean s':>7} {'max s':>6}"
    print()
    print(header)
    print("-" * len(header))
    for sid, n, ok, failed, mean, longest in rows:
        print(f"{sid:<24} {n:>5} {ok:>4} {failed:>6} {mean:>7.2f} {longest:>6.2f}")
    print("-" * len(header))
    total_ok = sum(r.ok for r in results)
    busy = sum(r.execution_time or 0.0 for r in results)
    print(
        f"{'total':<24} {len(results):>5} {total_ok:>4} {len(results) - total_ok:>6}"
        f"   {busy:.1f}s of work done in {elapsed:.1f}s of waiting"
    )
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"  {r.name}: {r.status} (exit {r.exit_code}): {r.stderr.strip()}")


if __name__ == "__main__":
    asyncio.run(main())
