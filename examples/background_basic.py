"""Starting background execution (async version of the documentation's first example).

HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_basic.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background execution
        result = await sandbox.run_code_background(
            code="""
import time
for i in range(10):
    print(f"Step {i+1}/10")
    time.sleep(2)
print("Done!")
""",
            language="python",
            name="long-task",
        )

        process_id = result["process_id"]
        print(f"Process started: {process_id}")
        print(f"Status: {result['status']}")
    # leaving the block kills the sandbox


if __name__ == "__main__":
    asyncio.run(main())
