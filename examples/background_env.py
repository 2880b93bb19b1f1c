"""Environment variables for background execution (async version of the documentation's example).

The documentation's example starts a 30-second task and exits before it prints anything;
this one (with a shorter task) waits for it and prints its output.

    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_env.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task with environment variables
        proc = await sandbox.run_code_background(
            code="""
import os
import time

api_key = os.getenv("API_KEY")
print(f"Using API key: {api_key[:10]}...")
print(f"DEBUG={os.getenv('DEBUG')}")
time.sleep(1)
print("Task completed")
""",
            language="python",
            env={"API_KEY": "sk-123456", "DEBUG": "true"},
            name="env-demo",
        )

        print(f"Process ID: {proc['process_id']}")
        result = await proc.wait(timeout=60)
        print(f"Output:\n{result.stdout}", end="")


if __name__ == "__main__":
    asyncio.run(main())
