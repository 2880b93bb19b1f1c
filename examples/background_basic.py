"""Starting background execution (async version of the documentation's first example).

The documentation's example starts a 20-second task and exits; this one (with shorter steps)
waits for it too and prints its output.

    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_basic.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background execution
        proc = await sandbox.run_code_background(
            code="""
import time
for i in range(10):
    print(f"Step {i+1}/10", flush=True)
    time.sleep(0.2)
print("Done!")
""",
            language="python",
            name="long-task",
        )

        process_id = proc["process_id"]  # the documented key; also proc.id
        print(f"Process started: {process_id}")
        print(f"Status: {proc['status']}")

        # It runs on while this code does other work; here, wait for it
        result = await proc.wait(timeout=60)
        print(f"Status: {result.status} (exit code {result.exit_code})")
        print(result.stdout, end="")
    # leaving the block kills the sandbox


if __name__ == "__main__":
    asyncio.run(main())
