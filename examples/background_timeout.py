"""Timeout configuration (async version of the documentation's example).

HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_timeout.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task with 10 minute timeout
        result = await sandbox.run_code_background(
            code="import time; time.sleep(300)",
            language="python",
            timeout=600,  # 10 minutes
            name="long-task",
        )

        print(f"Process started with {result.get('timeout', 'default')}s timeout")


if __name__ == "__main__":
    asyncio.run(main())
