"""Timeout configuration (async version of the documentation's example).

This example only starts a task: a 5-minute sleep with a 10-minute timeout, the server's
limit on how long it may run. It prints that timeout and exits; leaving the ``async with``
block kills the sandbox, and the task with it. A timeout that expires ends the process with
the status ``timeout`` (``hopx run --timeout 1 -c 'import time; time.sleep(5)'`` shows it).

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
        print("(only started: leaving this block kills the sandbox and the task with it)")


if __name__ == "__main__":
    asyncio.run(main())
