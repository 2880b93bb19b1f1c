"""The complete background workflow (async version of the documentation's example).

The documentation polls ``list_processes()`` every 2 s; here the handle's ``wait()`` does the
polling (one coalesced request per tick for every waiter of the sandbox) while a second task
prints the status every 2 s, as the documented loop does.

    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_complete.py
"""

import asyncio
import contextlib

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task
        proc = await sandbox.run_code_background(
            code="""
import time
import random

for i in range(20):
    value = random.randint(1, 100)
    print(f"Step {i+1}: Generated {value}")
    time.sleep(1)
print("All done!")
""",
            language="python",
            timeout=300,
            name="random-generator",
            env={"SEED": "42"},
        )
        print(f"✅ Background task started: {proc.id}")

        # Monitor progress
        async def report() -> None:
            while True:
                info = await proc.refresh()
                print(f"Status: {info.status}")
                await asyncio.sleep(2)

        reporter = asyncio.create_task(report())
        try:
            result = await proc.wait(timeout=120)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        print(f"Status: {result.status}")

        if result.status == "completed":
            print("✅ Task completed!")
            print(f"Output:\n{result.stdout}")
        else:
            print("❌ Task failed!")
            print(f"Error: {result.stderr}")


if __name__ == "__main__":
    asyncio.run(main())
