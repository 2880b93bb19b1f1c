"""AsyncSandbox against the local backend over real HTTP: create, connect, list, run code
and commands (a run past its timeout is a result), pause, resume and set the timeout."""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    CommandResult,
    ExecutionResult,
    ProcessInfo,
    SandboxNotFoundError,
)

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


async def test_create_get_info_and_kill(client: AsyncHopx) -> None:
    sandbox = await client.sandboxes.create("code-interpreter", timeout_seconds=600)
    try:
        info = await sandbox.get_info()
        assert info.id == sandbox.id
        assert info.status == "running"
        assert info.template_name == "code-interpreter"
        assert info.public_host
        assert (await client.sandboxes.get(sandbox.id)).id == sandbox.id
        assert "auth_token" not in repr(sandbox)
    finally:
        await sandbox.kill()
    await sandbox.kill()  # twice is harmless
    with pytest.raises(SandboxNotFoundError):
        await client.sandboxes.get(sandbox.id)
    with pytest.raises(SandboxNotFoundError, match="was killed"):
        await sandbox.run_code("print(1)")


async def test_async_with_kills_the_sandbox(client: AsyncHopx) -> None:
    async with client.sandboxes.create("code-interpreter") as sandbox:
        sid = sandbox.id
    with pytest.raises(SandboxNotFoundError):
        await client.sandboxes.get(sid)


async def test_connect_to_existing_sandbox(client: AsyncHopx, sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print('from first handle')")
    await proc.wait()
    other = await client.sandboxes.connect(sandbox.id)
    assert other is not sandbox
    infos = await other.list_processes()
    assert [i.stdout for i in infos if i.process_id == proc.id] == ["from first handle\n"]


async def test_list_follows_cursors(client: AsyncHopx) -> None:
    made = [await client.sandboxes.create("base") for _ in range(5)]
    try:
        seen = [info.id async for info in client.sandboxes.list(page_size=2)]
        assert {s.id for s in made} <= set(seen)
        assert len(seen) == len(set(seen)), "pages must not repeat sandboxes"
        limited = [info async for info in client.sandboxes.list(page_size=2, limit=3)]
        assert len(limited) == 3
    finally:
        for s in made:
            await s.kill()


async def test_templates(client: AsyncHopx) -> None:
    names = {t.name for t in await client.sandboxes.list_templates()}
    assert {"code-interpreter", "base"} <= names


async def test_run_code_synchronously(sandbox: AsyncSandbox) -> None:
    result = await sandbox.run_code("import sys; print(6 * 7); print('e', file=sys.stderr)")
    assert isinstance(result, ExecutionResult)
    assert result.success and result.exit_code == 0
    assert result.stdout == "42\n" and result.stderr == "e\n"
    failed = await sandbox.run_code("raise SystemExit(3)")
    assert not failed.success and failed.exit_code == 3


async def test_run_code_bash_and_env(sandbox: AsyncSandbox) -> None:
    result = await sandbox.run_code('echo "$GREETING"', language="bash", env={"GREETING": "hi"})
    assert result.stdout == "hi\n"


async def test_commands_foreground_and_background(sandbox: AsyncSandbox) -> None:
    out = await sandbox.commands.run("echo one && echo two >&2 && exit 4")
    assert isinstance(out, CommandResult)
    assert (out.stdout, out.stderr, out.exit_code, out.ok) == ("one\n", "two\n", 4, False)
    proc = await sandbox.commands.run("echo bg; sleep 0.2; echo end", background=True, name="cmd")
    assert proc.name == "cmd" and proc.id.startswith("proc_")
    assert proc.timeout == 300, "background commands live 300 s by default, not 30"
    result = await proc.wait(timeout=30)
    assert result.stdout == "bg\nend\n" and result.ok


async def test_working_dir(sandbox: AsyncSandbox) -> None:
    made = await sandbox.commands.run("mkdir -p sub && echo x > sub/f")
    assert made.ok, made.stderr
    out = await sandbox.commands.run("cat f && pwd", working_dir="/workspace/sub")
    assert out.stdout.splitlines()[0] == "x"


async def test_list_and_get_processes(sandbox: AsyncSandbox) -> None:
    a = await sandbox.run_code_background("print('a')", name="alpha")
    b = await sandbox.run_code_background("import time; time.sleep(30)", name="beta")
    await a.wait()
    everything = await sandbox.list_processes()
    assert {a.id, b.id} <= {p.process_id for p in everything}
    assert all(isinstance(p, ProcessInfo) for p in everything)
    running = await sandbox.list_processes(status="running")
    assert [p.process_id for p in running] == [b.id]
    named = await sandbox.list_processes(name="alpha")
    assert [p.stdout for p in named] == ["a\n"]
    got = await sandbox.get_process(b.id)
    assert got.status == "running" and got.name == "beta"
    assert await b.kill() is True
    assert (await b.wait()).status == "killed"


async def test_pause_and_resume(sandbox: AsyncSandbox) -> None:
    await sandbox.pause()
    assert (await sandbox.get_info()).status == "paused"
    await sandbox.resume()
    assert (await sandbox.get_info()).status == "running"
    assert (await sandbox.run_code("print('back')")).stdout == "back\n"


async def test_set_timeout_extends_life(sandbox: AsyncSandbox) -> None:
    await sandbox.set_timeout(3600)
    info = await sandbox.get_info()
    assert info.timeout_seconds == 3600 and info.expires_at is not None


async def test_standalone_create_shares_one_default_client(backend: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("HOPX_API_KEY", backend.api_key)
    monkeypatch.setenv("HOPX_BASE_URL", backend.base_url)
    first = await AsyncSandbox.create(template="code-interpreter")
    async with AsyncSandbox.create(template="code-interpreter", env_vars={"X": "1"}) as second:
        assert first.client is second.client
        result = await second.run_code("import os; print(os.environ['X'])")
        assert result.stdout == "1\n"
    default = first.client
    assert not default.closed
    await first.kill()
    assert not default.closed, "the default client closes its pool only, not itself"
    again = await AsyncSandbox.create(template="code-interpreter")
    assert again.client is default, "and opens a new pool for the next standalone sandbox"
    await again.kill()


async def test_token_of_other_sandbox_is_refused(backend: Any, client: AsyncHopx) -> None:
    """A sandbox object given another sandbox's token is refused by the agent."""
    import aiohttp

    from hopx_async import AuthenticationError, PermissionDeniedError

    async with client.sandboxes.create("base") as a, client.sandboxes.create("base") as b:
        async with (
            aiohttp.ClientSession() as http,
            http.post(  # a fresh token of a
                f"{backend.base_url}/v1/sandboxes/{a.id}/token/refresh",
                headers={"Authorization": f"Bearer {backend.api_key}"},
            ) as resp,
        ):
            a_token = (await resp.json())["auth_token"]
        impostor = AsyncSandbox(client, client._control, b.info, token=a_token)
        with pytest.raises((AuthenticationError, PermissionDeniedError)):
            await impostor.run_code("print(1)")


async def test_run_code_past_its_timeout_is_a_result(sandbox: AsyncSandbox) -> None:
    result = await sandbox.run_code(
        "import time\nprint('begun', flush=True)\ntime.sleep(30)", timeout=1
    )
    assert result.success is False
    assert result.exit_code == 124
    assert result.stdout == "begun\n"
    assert "timed out after 1 second;" in result.stderr


async def test_a_408_timeout_answer_is_a_result_too(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    # A fault: how a server that answers a synchronous timeout with 408 (as this backend
    # once did) would answer; the service and this backend answer 200.
    answer = {
        "error": "execution timed out after 1 seconds",
        "code": "EXECUTION_TIMEOUT",
        "stdout": "partial\n",
        "stderr": "warn",
        "exit_code": None,
    }
    async with proxied.sandboxes.create("code-interpreter") as sandbox:
        proxy.inject(Fault("POST", r"/execute$", 408, answer, times=1))
        result = await sandbox.run_code("print('x')", timeout=1)
        assert result.success is False
        assert result.exit_code == 124
        assert result.stdout == "partial\n"
        assert result.stderr == "warn\nexecution timed out after 1 seconds\n"
        proxy.inject(Fault("POST", r"/commands/run$", 408, answer, times=1))
        command = await sandbox.commands.run("sleep 5", timeout=1)
        assert command.exit_code == 124
        assert command.stdout == "partial\n"


async def test_each_sandbox_object_keeps_its_own_handles(
    backend: Any, sandbox: AsyncSandbox
) -> None:
    """Two clients (or two connects) on one sandbox: each object's handles are its own, and a
    handle waits through the watcher of the sandbox object it came from."""
    proc = await sandbox.run_code_background("import time; time.sleep(0.3); print('done')")
    assert sandbox.process(proc.id) is proc
    async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as other:
        twin = await other.sandboxes.connect(sandbox.id)
        seen = twin.process(proc.id)
        assert seen is not proc and seen.sandbox is twin and twin.process(proc.id) is seen
        polls = sandbox.watcher_stats.polls
        result = await seen.wait(timeout=60)
        assert result.stdout == "done\n"
        assert twin.watcher_stats.polls >= 1
        assert sandbox.watcher_stats.polls == polls  # nobody waited through the first
        assert proc.result is None  # the first object's handle saw nothing of that wait
    assert (await proc.wait(timeout=60)).stdout == "done\n"
    again = await AsyncSandbox.connect(sandbox.id, client=sandbox.client)
    assert again.process(proc.id) is not proc


async def test_removed_process_handle_is_forgotten_by_its_sandbox_only(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    proc = await sandbox.run_code_background("print(1)")
    await proc.wait(timeout=60)
    twin = await client.sandboxes.connect(sandbox.id)
    kept = twin.process(proc.id)
    await sandbox.remove_process(proc.id)
    assert sandbox.process(proc.id) is not proc  # a new handle: the old one was forgotten
    assert twin.process(proc.id) is kept
