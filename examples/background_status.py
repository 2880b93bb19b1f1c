"""Checking process status (async version of the documentation's example).

HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_status.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task
        result = await sandbox.run_code_background(
            code='import time; time.sleep(30); print("Done")',
            language="python",
            name="check-status-demo",
        )

        process_id = result["process_id"]

        # Check status periodically
        for _ in range(5):
            processes = await sandbox.list_processes()
            for proc in processes:
                if proc["process_id"] == process_id:
                    print(f"Status: {proc['status']}")
                    if proc["status"] == "completed":
                        print(f"Output: {proc.get('stdout', '')}")
                        break
            await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
