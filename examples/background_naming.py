"""Process naming (async version of the documentation's example).

Two named processes run at once; the list shows them by name while they run, then the
example waits for both and prints how each ended (the documentation's tasks sleep 60 s and
are left running; these sleep 2 s).

    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_naming.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start multiple named processes, both at once
        procs = await asyncio.gather(
            sandbox.run_code_background(
                code="import time; time.sleep(2); print('data ready')",
                language="python",
                name="data-processing",
            ),
            sandbox.run_code_background(
                code="import time; time.sleep(2); print('model trained')",
                language="python",
                name="ml-training",
            ),
        )

        # List processes by name
        for info in await sandbox.list_processes():
            print(f"{info.get('name', 'unnamed')}: {info['status']}")

        # Wait for both, and show how each ended
        results = await sandbox.client.wait_all(procs, timeout=60)
        for proc, result in zip(procs, results, strict=True):
            print(f"{proc.name}: {result.status}, {result.stdout.strip()}")


if __name__ == "__main__":
    asyncio.run(main())
