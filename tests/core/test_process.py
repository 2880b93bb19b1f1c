"""The BackgroundProcess handle: wait, kill, output, dict access."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import (
    AsyncBackgroundProcess,
    AsyncHopx,
    AsyncSandbox,
    OutputChunk,
    ProcessFailedError,
    ProcessNotFoundError,
    WaitTimeoutError,
)

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


async def test_start_answer_and_dict_access(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print('hi')", name="greet", timeout=600)
    assert isinstance(proc, AsyncBackgroundProcess)
    assert proc["process_id"] == proc.id == proc.process_id
    assert proc["status"] in ("queued", "running", "completed")
    assert proc.get("name", "unnamed") == "greet"
    assert proc.get("timeout", "default") == 600
    assert proc.execution_id and proc["execution_id"] == proc.execution_id
    with pytest.raises(KeyError):
        proc["stdout"]
    result = await proc.wait()
    assert (result.status, result.exit_code, result.stdout) == ("completed", 0, "hi\n")
    assert result.started_at is not None and result.completed_at is not None
    assert result.execution_time is not None and result.execution_time >= 0
    assert proc.status == "completed" and proc.done and proc.result is result


async def test_wait_check_raises_for_failures(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background(
        "import sys; print('oops', file=sys.stderr); sys.exit(3)"
    )
    result = await proc.wait()
    assert (result.status, result.exit_code) == ("failed", 3)
    with pytest.raises(ProcessFailedError) as err:
        await proc.wait(check=True)
    assert err.value.result.stderr == "oops\n"
    assert "exit code 3" in str(err.value)


async def test_wait_timeout_leaves_process_running(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(30)")
    with pytest.raises(WaitTimeoutError) as err:
        await proc.wait(timeout=0.3)
    assert isinstance(err.value, TimeoutError)
    assert err.value.process_id == proc.id
    assert (await proc.refresh()).status == "running"
    assert sandbox.watcher_stats.waiters == 0, "nobody waits"
    assert await proc.kill()
    assert (await proc.wait(timeout=10)).status == "killed"
    assert await proc.kill() is False


async def test_server_side_timeout(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(30)", timeout=1)
    result = await proc.wait(timeout=20)
    assert result.status == "timeout"
    with pytest.raises(ProcessFailedError):
        await proc.wait(check=True)


async def test_kill_unknown_process(sandbox: AsyncSandbox) -> None:
    with pytest.raises(ProcessNotFoundError):
        await sandbox.kill_process("proc_doesnotexist")


async def test_cancelling_one_wait_leaves_the_others(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(0.8); print('ok')")
    first = asyncio.ensure_future(proc.wait())
    second = asyncio.ensure_future(proc.wait())
    for _ in range(500):
        if sandbox.watcher_stats.waiters == 2:
            break
        await asyncio.sleep(0.01)
    first.cancel()
    result = await second
    assert first.cancelled()
    assert result.stdout == "ok\n" and result.status == "completed"


async def test_output_streams_every_byte_once(sandbox: AsyncSandbox) -> None:
    code = (
        "import sys, time\n"
        "for i in range(5):\n"
        "    print(f'line {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    proc = await sandbox.run_code_background(code)
    chunks: list[OutputChunk] = [c async for c in proc.output()]
    out = "".join(c.text for c in chunks if c.stream == "stdout")
    err = "".join(c.text for c in chunks if c.stream == "stderr")
    assert out == "".join(f"line {i}\n" for i in range(5))
    assert err == "".join(f"err {i}\n" for i in range(5))
    assert len(chunks) > 2, "output arrives in pieces while the process runs"
    assert proc.done


async def test_output_without_server_offsets(backend: Any) -> None:
    """As against the real service: the new text is derived from each poll's full output."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background(
            "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.1)"
        )
        text = "".join([c.text async for c in proc.output()])
        assert text == "0\n1\n2\n"
        assert proxy.count("GET", "/execute/processes/{proc}") == 0, "no offsets reads"
        assert (await proc.wait()).stdout == text


async def test_large_output_is_complete(sandbox: AsyncSandbox) -> None:
    # 3 MiB: more than the 1 MiB the list answer carries per process
    code = (
        "import sys\nfor i in range(3072):\n    sys.stdout.write(f'{i:07d}' + 'x' * 1016 + '\\n')"
    )
    proc = await sandbox.run_code_background(code)
    result = await proc.wait(timeout=60)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * 1024
    assert lines[0].startswith("0000000") and lines[-1].startswith(f"{3 * 1024 - 1:07d}")


async def test_handle_for_existing_process(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('later')")
    other = await client.sandboxes.connect(sandbox.id)
    handle = other.process(proc.id)
    assert handle.status == "unknown"
    result = await handle.wait(timeout=30)
    assert result.stdout == "later\n"


async def test_remove_finished_process(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print(1)")
    await proc.wait()
    await sandbox.remove_process(proc.id)
    assert proc.id not in {p.process_id for p in await sandbox.list_processes()}


CODE = "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)"


async def test_output_then_wait_keeps_stdout_and_stderr(any_server: Any) -> None:
    sandbox, _ = any_server
    proc = await sandbox.run_code_background(CODE)
    streamed = [chunk async for chunk in proc.output()]
    assert "".join(c.text for c in streamed if c.stream == "stdout") == "out\n"
    result = await proc.wait()
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    again = await sandbox.process(proc.id).wait()
    assert (again.stdout, again.stderr) == ("out\n", "err\n")
