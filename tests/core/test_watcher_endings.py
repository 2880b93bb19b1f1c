"""Lifecycle rules of waits and streams: each test here failed before its fix.

- output streamed first is still in the result of ``wait()``;
- ``wait()`` on an unknown process fails fast, with and without the server's extensions;
- closing a client ends every pending wait with ``ClientClosedError``;
- a paused sandbox is waited for (its agent answers 409 while paused), not an error;
- ids are percent-encoded whole, so they never leave their resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    ClientClosedError,
    HopxError,
    NotFoundError,
    PollPolicy,
    ProcessNotFoundError,
    SandboxNotFoundError,
    ValidationError,
)

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio

CODE = "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)"


async def until(condition: Any, what: str, tries: int = 1000) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(params=["extensions", "plain"])
async def any_server(request: Any, backend: Any) -> AsyncIterator[tuple[AsyncSandbox, FaultProxy]]:
    """A sandbox on the local backend with its extensions, and as the real service (none)."""
    async with (
        FaultProxy(backend.base_url, hide_features=request.param == "plain") as proxy,
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        yield sandbox, proxy


async def test_output_then_wait_keeps_stdout_and_stderr(any_server: Any) -> None:
    sandbox, _ = any_server
    proc = await sandbox.run_code_background(CODE)
    streamed = [chunk async for chunk in proc.output()]
    assert "".join(c.text for c in streamed if c.stream == "stdout") == "out\n"
    result = await proc.wait()
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    again = await sandbox.process(proc.id).wait()
    assert (again.stdout, again.stderr) == ("out\n", "err\n")


async def test_wait_on_unknown_process_fails_fast(any_server: Any) -> None:
    sandbox, _ = any_server
    await sandbox.run_code_background("print('a neighbour')")
    with pytest.raises(ProcessNotFoundError, match="proc_nope"):
        await sandbox.process("proc_nope").wait()
    # with a timeout it is still "not found", never "still running"
    with pytest.raises(ProcessNotFoundError):
        await sandbox.process("proc_nope2").wait(timeout=30)
    assert sandbox.watcher_stats.waiters == 0


async def test_wait_on_unknown_process_in_an_empty_sandbox(client: AsyncHopx) -> None:
    """No process at all: the long poll of changes must not hold the answer back."""
    async with client.sandboxes.create("base") as sandbox:
        with pytest.raises(ProcessNotFoundError):
            await sandbox.process("proc_nope").wait(timeout=30)


async def test_aclose_ends_pending_waits(backend: Any) -> None:
    client = AsyncHopx(api_key=backend.api_key, base_url=backend.base_url)
    sandbox = await client.sandboxes.create("base")
    try:
        procs = [await sandbox.run_code_background("import time; time.sleep(30)") for _ in range(3)]
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        await until(lambda: sandbox.watcher_stats.waiters == 3, "three waiters")
        await client.aclose()
        for fut in waits:
            with pytest.raises(ClientClosedError):
                await asyncio.wait_for(fut, 10)
        assert sandbox.watcher_stats.waiters == 0
        with pytest.raises(ClientClosedError):
            await procs[0].wait()  # a wait after the close fails at once too
    finally:
        async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as other:
            await (await other.sandboxes.connect(sandbox.id)).kill()


async def test_kill_of_the_sandbox_ends_pending_waits(client: AsyncHopx) -> None:
    sandbox = await client.sandboxes.create("base")
    proc = await sandbox.run_code_background("import time; time.sleep(30)")
    waiting = asyncio.ensure_future(proc.wait())
    await until(lambda: sandbox.watcher_stats.waiters == 1, "one waiter")
    await sandbox.kill()
    # it ends: with the killed process's record when the watcher saw it first, else an error
    try:
        result = await asyncio.wait_for(waiting, 10)
    except SandboxNotFoundError:
        pass
    else:
        assert result.status == "killed"
    assert sandbox.watcher_stats.waiters == 0
    with pytest.raises(SandboxNotFoundError):
        await sandbox.process("proc_other").wait()


async def test_wait_and_output_keep_waiting_while_paused(backend: Any, proxy: FaultProxy) -> None:
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.1, long_poll=0.5),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('done')")
        streamed = sandbox.process(proc.id)
        await sandbox.pause()
        looked = proxy.count("GET", "/v1/sandboxes/{sbx}")
        waiting = asyncio.ensure_future(proc.wait())

        async def stream() -> str:
            return "".join([c.text async for c in streamed.output()])

        reading = asyncio.ensure_future(stream())
        # both asked the control plane whether the sandbox is paused, and keep waiting
        await until(lambda: proxy.count("GET", "/v1/sandboxes/{sbx}") >= looked + 2, "paused")
        assert not waiting.done() and not reading.done()
        await sandbox.resume()
        assert (await asyncio.wait_for(waiting, 30)).stdout == "done\n"
        assert await asyncio.wait_for(reading, 30) == "done\n"


async def test_conflict_that_is_not_a_pause_is_raised(sandbox: AsyncSandbox) -> None:
    from hopx_async import ConflictError

    proc = await sandbox.run_code_background("import time; time.sleep(30)")
    with pytest.raises(ConflictError):  # removing a running process: a real conflict
        await sandbox.remove_process(proc.id)
    await proc.kill()


async def test_ids_never_leave_their_resource(backend: Any, proxy: FaultProxy) -> None:
    paths: list[str] = []
    proxy.on_request = lambda request: paths.append(request.raw_path)
    async with (
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        paths.clear()
        with pytest.raises(NotFoundError):
            await client.sandboxes.get("../templates/base")
        assert paths == ["/v1/sandboxes/..%2Ftemplates%2Fbase"]
        paths.clear()
        with pytest.raises(HopxError):
            await sandbox.get_process("../../../../v1/templates/base")
        agent = f"/sandboxes/{sandbox.id}/"
        assert paths, "the request was sent"
        assert all(p.startswith(agent) for p in paths), paths
        assert f"{agent}execute/processes/..%2F..%2F..%2F..%2Fv1%2Ftemplates%2Fbase" in paths
    async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as direct:
        with pytest.raises(SandboxNotFoundError):
            await direct.sandboxes.get("../templates/base")
        for dots in (".", ".."):
            with pytest.raises(ValidationError, match="sandbox_id"):
                await direct.sandboxes.get(dots)


async def test_wait_on_a_paused_sandbox_ends_with_the_callers_timeout(
    backend: Any, client: AsyncHopx
) -> None:
    """A client that first meets the sandbox paused waits too, until its own timeout."""
    from hopx_async import WaitTimeoutError

    async with client.sandboxes.create("base") as sandbox:
        proc = await sandbox.run_code_background("import time; time.sleep(0.2); print('ok')")
        await sandbox.pause()
        async with AsyncHopx(
            api_key=backend.api_key,
            base_url=backend.base_url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.1),
        ) as other:
            again = await other.sandboxes.connect(sandbox.id)
            with pytest.raises(WaitTimeoutError):
                await again.process(proc.id).wait(timeout=0.5)
            waiting = asyncio.ensure_future(again.process(proc.id).wait())
            await sandbox.resume()
            assert (await asyncio.wait_for(waiting, 30)).stdout == "ok\n"
