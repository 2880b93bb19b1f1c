"""Process naming (async version of the documentation's example).

HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_naming.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start multiple named processes, both at once
        await asyncio.gather(
            sandbox.run_code_background(
                code="import time; time.sleep(60)", language="python", name="data-processing"
            ),
            sandbox.run_code_background(
                code="import time; time.sleep(60)", language="python", name="ml-training"
            ),
        )

        # List processes by name
        for proc in await sandbox.list_processes():
            print(f"{proc.get('name', 'unnamed')}: {proc['status']}")


if __name__ == "__main__":
    asyncio.run(main())
