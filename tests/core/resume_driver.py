"""A driver of a resumable ``run_many``, run as a subprocess by tests/core/test_resume.py.

    python resume_driver.py MANIFEST COUNT SANDBOX_ID... (HOPX_API_KEY, HOPX_BASE_URL set)

Task ``i`` prints ``out-i``; all but the first two then wait for a file ``go`` in their
sandbox's workspace (the test writes it once the driver it killed is gone). Prints one JSON
line: the results' stdout by task and the run's ``BatchStats``.
"""

from __future__ import annotations

import asyncio
import json
import sys

import attrs

from hopx_async import AsyncHopx, BatchStats, PollPolicy, Task, Timeouts

#: what a task runs after printing: wait for the file ``go`` (but at most 60 s)
HOLD = (
    "import os, time\n"
    "for _ in range(1200):\n"
    "    if os.path.exists('go'):\n"
    "        break\n"
    "    time.sleep(0.05)\n"
)


def tasks(count: int) -> list[Task]:
    return [
        Task(code=f"print('out-{i}', flush=True)\n" + ("" if i < 2 else HOLD)) for i in range(count)
    ]


async def main(manifest: str, count: int, ids: list[str]) -> None:
    async with AsyncHopx(
        timeouts=Timeouts(request=2.0), polling=PollPolicy(initial_interval=0.05, max_interval=0.3)
    ) as client:
        boxes = [await client.sandboxes.connect(i) for i in ids]
        stats = BatchStats()
        results = await client.run_many(
            tasks(count), sandboxes=boxes, max_concurrency=4, manifest=manifest, stats=stats
        )
        print(
            json.dumps({"stdout": [r.stdout for r in results], "stats": attrs.asdict(stats)}),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
