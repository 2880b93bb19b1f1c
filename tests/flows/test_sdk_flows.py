"""Every public flow of the async SDK, against each dialect of the local backend.

A flow that a strict dialect breaks through an SDK bug of issue 16 (being fixed) is marked
``xfail(strict=True)`` for that dialect with the item it waits for; once the fix lands it
XPASSes, fails, and the marker is removed.
"""

from __future__ import annotations

import asyncio

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    HopxError,
    OutputUnavailableError,
    Task,
    ValidationError,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_start_and_wait(dialect: str, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print('hello')")
    result = await proc.wait(timeout=30)
    assert result.status == "completed"
    assert result.exit_code == 0
    # The OpenAPI process list carries no output: the result says so instead of passing ''
    # off as the output.
    assert result.output_available is (dialect != "openapi")
    assert result.stdout == ("" if dialect == "openapi" else "hello\n")


async def test_wait_all_and_as_completed(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    procs = [await sandbox.run_code_background(f"print({i})") for i in range(3)]
    results = await client.wait_all(procs, timeout=30)
    assert [r.status for r in results] == ["completed"] * 3
    more = [await sandbox.run_code_background("pass") for _ in range(2)]
    seen = [r.status async for r in client.as_completed(more, timeout=30)]
    assert seen == ["completed", "completed"]


async def test_run_many(dialect: str, client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    tasks = [Task(code=f"print({i} * 2)") for i in range(4)]
    results = await client.run_many(tasks, sandboxes=[sandbox], timeout=60)
    assert [r.status for r in results] == ["completed"] * 4
    if dialect == "openapi":
        assert not any(r.output_available for r in results)
    else:
        assert sorted(r.stdout for r in results) == ["0\n", "2\n", "4\n", "6\n"]


async def test_output_follows(dialect: str, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background(
        "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.1)"
    )
    if dialect == "openapi":  # no output to follow: a typed error, not an empty iteration
        with pytest.raises(OutputUnavailableError):
            [chunk async for chunk in proc.output()]
        return
    text = "".join([chunk.text async for chunk in proc.output()])
    assert text == "0\n1\n2\n"


async def test_kill(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(60)")
    await asyncio.sleep(0.2)
    await proc.kill()
    result = await proc.wait(timeout=30)
    assert result.status == "killed"


async def test_list_get_and_sandboxes(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("pass", name="listed")
    await proc.wait(timeout=30)
    listed = await sandbox.list_processes()
    assert proc.id in {p.process_id for p in listed}
    info = await sandbox.get_process(proc.id)
    assert info.status == "completed"
    assert sandbox.id in {s.id async for s in client.sandboxes.list()}
    assert (await client.sandboxes.get(sandbox.id)).id == sandbox.id


async def test_remove_process(dialect: str, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("pass")
    await proc.wait(timeout=30)
    if dialect == "extended":
        await sandbox.remove_process(proc.id)
        assert proc.id not in {p.process_id for p in await sandbox.list_processes()}
    else:  # the service cannot remove a process: a clear error, nothing sent
        with pytest.raises(HopxError, match=r"(?i)remov"):
            await sandbox.remove_process(proc.id)


async def test_run_code(sandbox: AsyncSandbox) -> None:
    result = await sandbox.run_code("print(6 * 7)")
    assert result.stdout == "42\n"
    assert result.exit_code == 0


async def test_commands_foreground(
    request: pytest.FixtureRequest, dialect: str, sandbox: AsyncSandbox
) -> None:
    result = await sandbox.commands.run("echo hi && echo err >&2")
    assert result.stdout == "hi\n"
    assert result.exit_code == 0


async def test_commands_nonzero_exit_is_a_result(
    request: pytest.FixtureRequest, dialect: str, sandbox: AsyncSandbox
) -> None:
    result = await sandbox.commands.run("echo x; exit 3")
    assert result.exit_code == 3
    assert result.stdout == "x\n"


async def test_commands_background(
    request: pytest.FixtureRequest, dialect: str, sandbox: AsyncSandbox
) -> None:
    proc = await sandbox.commands.run("echo bg", background=True)
    result = await proc.wait(timeout=30)
    assert result.status == "completed"
    if dialect != "openapi":
        assert result.stdout == "bg\n"


async def test_files(sandbox: AsyncSandbox) -> None:
    await sandbox.files.write("/workspace/flow.txt", "content")
    assert await sandbox.files.read("/workspace/flow.txt") == "content"
    assert await sandbox.files.exists("/workspace/flow.txt")
    assert "flow.txt" in {f.name for f in await sandbox.files.list("/workspace")}
    await sandbox.files.remove("/workspace/flow.txt")
    assert not await sandbox.files.exists("/workspace/flow.txt")


async def test_env(sandbox: AsyncSandbox) -> None:
    await sandbox.env.update({"FLOW_A": "1", "FLOW_B": "2"})
    assert await sandbox.env.get("FLOW_A") == "1"
    await sandbox.env.delete("FLOW_A")
    assert await sandbox.env.get("FLOW_A") is None
    assert await sandbox.env.get("FLOW_B") == "2"


async def test_stream(sandbox: AsyncSandbox) -> None:
    chunks = [chunk async for chunk in sandbox.run_code_stream("print('streamed')")]
    assert "streamed" in "".join((c.text or "") for c in chunks)


async def test_webhook(dialect: str, sandbox: AsyncSandbox) -> None:
    from aiohttp import web

    from hopx_async import verify_webhook

    hits: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await hits.put((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/flow", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/flow"
        if dialect == "openapi":  # no /execute/async in the OpenAPI document
            with pytest.raises(HopxError):
                await sandbox.run_code_async("print(1)", callback_url=url)
            return
        execution = await sandbox.run_code_async(
            "print('hooked')", callback_url=url, callback_signature_secret="flow-secret"
        )
        headers, body = await asyncio.wait_for(hits.get(), 30)
    finally:
        await runner.cleanup()
    verify_webhook("flow-secret", headers, body)
    assert execution.execution_id in body.decode()


async def test_background_code_in_a_working_directory(dialect: str, sandbox: AsyncSandbox) -> None:
    """Where the agent honours a background working directory (``extended`` advertises
    ``background_workdir``) Python code runs there; where it does not, bash code gets a
    ``cd`` and other code is refused before anything starts, never run in /workspace. (A
    relative directory: these backends run without the box, where /workspace is not a real path.)
    Each process writes its directory's name to a file there, read back through the files API (the
    ``openapi`` list carries no output)."""
    await sandbox.files.mkdir("/workspace/sub")
    bash = await sandbox.run_code_background(
        'basename "$PWD" > bash.txt', language="bash", working_dir="sub"
    )
    await bash.wait(timeout=30, check=True)
    assert await sandbox.files.read("/workspace/sub/bash.txt") == "sub\n"
    code = "import os; open('py.txt', 'w').write(os.path.basename(os.getcwd()))"
    if dialect == "extended":
        proc = await sandbox.run_code_background(code, working_dir="sub")
        await proc.wait(timeout=30, check=True)
        assert await sandbox.files.read("/workspace/sub/py.txt") == "sub"
    else:
        with pytest.raises(ValidationError, match="working_dir"):
            await sandbox.run_code_background(code, working_dir="sub")
        assert not await sandbox.files.exists("/workspace/sub/py.txt")
