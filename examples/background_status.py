"""Checking process status (async version of the documentation's example).

The documentation checks five times, 2 s apart, and so never sees its 30-second task end;
this one checks until the (shorter) task has ended, then prints its output. ``proc.wait()``
does the same polling for you (see background_complete.py).

    HOPX_BASE_URL=... HOPX_API_KEY=... python examples/background_status.py
"""

import asyncio

from hopx_async import AsyncSandbox


async def main() -> None:
    async with AsyncSandbox.create(template="code-interpreter") as sandbox:
        # Start background task
        result = await sandbox.run_code_background(
            code='import time; time.sleep(3); print("Done")',
            language="python",
            name="check-status-demo",
        )

        process_id = result["process_id"]

        # Check status periodically, until it has ended (at most a minute)
        for _ in range(60):
            processes = await sandbox.list_processes()
            found = [proc for proc in processes if proc["process_id"] == process_id]
            status = found[0]["status"] if found else "gone"
            print(f"Status: {status}")
            if found and found[0].is_done:
                print(f"Output: {found[0].get('stdout', '')}", end="")
                break
            await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(main())
