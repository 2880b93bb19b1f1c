"""``AsyncSandbox.terminal()``: an interactive shell on a pseudo-terminal."""

from __future__ import annotations

import anyio
import pytest

from hopx_async import AsyncSandbox, AsyncTerminal

pytestmark = pytest.mark.anyio

#: A terminal test that does not end in this long fails (a hang would outlive pytest-timeout's
#: alarm in the fixture's teardown).
BOUND = 60


async def _prompt(term: AsyncTerminal) -> None:
    """Until the shell wrote something (its prompt): what is typed before an interactive
    shell is up may be lost to its start."""
    async for text in term.output():
        if text.strip():
            return


async def test_terminal_resize_echo_and_exit_code(sandbox: AsyncSandbox) -> None:
    with anyio.fail_after(BOUND):
        await _resize_echo_and_exit_code(sandbox)


async def _resize_echo_and_exit_code(sandbox: AsyncSandbox) -> None:
    async with sandbox.terminal(cols=100, rows=30) as term:
        await _prompt(term)
        await term.send("stty size\n")
        seen = ""
        async for text in term.output():  # the first size, before the resize
            seen += text
            if "30 100" in seen:
                break
        await term.resize(120, 40)
        await term.send("stty size; echo $((6*7)); exit 3\n")
        output = "".join([text async for text in term.output()])
    assert "40 120" in output
    assert "42" in output
    assert term.exit_code == 3


async def test_closing_the_terminal_ends_the_shell(sandbox: AsyncSandbox) -> None:
    with anyio.fail_after(BOUND):
        await _closing_ends_the_shell(sandbox)


async def _closing_ends_the_shell(sandbox: AsyncSandbox) -> None:
    async with sandbox.terminal() as term:
        await _prompt(term)
        await term.send("echo $$ > shell.pid; echo ready\n")
        async for text in term.output():
            if "ready" in text.replace("echo ready", ""):
                break
    pid = (await sandbox.files.read("/workspace/shell.pid")).strip()
    probe = await sandbox.commands.run(
        f"for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
    )
    assert probe.exit_code == 0, "the shell still runs after its terminal closed"
    assert term.exit_code is None


async def test_terminal_size_is_checked_before_any_request(sandbox: AsyncSandbox) -> None:
    with pytest.raises(ValueError, match="cols"):
        sandbox.terminal(cols=0)
    with pytest.raises(ValueError, match="rows"):
        sandbox.terminal(rows=10**6)
