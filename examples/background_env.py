"""Environment variables for background execution (async version of the documentation's example).

HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_env.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task with environment variables
        result = await sandbox.run_code_background(
            code="""
import os
import time

api_key = os.getenv("API_KEY")
print(f"Using API key: {api_key[:10]}...")
time.sleep(30)
print("Task completed")
""",
            language="python",
            env={"API_KEY": "sk-123456", "DEBUG": "true"},
            name="env-demo",
        )

        print(f"Process ID: {result['process_id']}")


if __name__ == "__main__":
    asyncio.run(main())
