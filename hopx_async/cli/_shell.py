"""``hopx shell``: an interactive terminal in a sandbox; ``hopx exec``: one command in it."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shlex
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator

import click

from hopx_async import AsyncTerminal

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    Interrupted,
    Settings,
    arun,
    interruptible,
    parse_env,
    process_exit_code,
)
from ._group import cli, pass_settings
from ._lookup import connect_running
from ._output import note
from ._run import follow

#: Bytes of the local terminal's input read (and sent) at a time.
_READ = 4096


# ----------------------------------------------------------------------------------- shell
@cli.command()
@click.argument("sandbox_id", metavar="SANDBOX")
@pass_settings
def shell(settings: Settings, sandbox_id: str) -> int:
    """Open an interactive shell in a sandbox (bash, else sh, in /workspace).

    \b
    The local terminal is put in raw mode for the session (Ctrl-C, Ctrl-Z and the
    window's size go to the sandbox) and restored at the end; hopx exits with the
    shell's exit status. Closing the connection ends the shell.
      hopx shell sbx_abc
    """
    return arun(_shell(settings, sandbox_id))


def _size() -> tuple[int, int]:
    """The local terminal's size (the window's, not ``COLUMNS``), else ``shutil``'s guess."""
    for stream in (sys.stdout, sys.stdin):
        try:
            size = os.get_terminal_size(stream.fileno())
        except (OSError, ValueError):
            continue
        if size.columns and size.lines:
            return size.columns, size.lines
    guess = shutil.get_terminal_size()
    return max(1, guess.columns), max(1, guess.lines)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal at ``fd`` in raw mode (typed-ahead input kept), restored at the end."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def done() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, done)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _forward_input(fd: int, term: AsyncTerminal) -> None:
    """Send what is typed, one read at a time; at the end of the input, Ctrl-D once."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pollable = True
    while True:
        if pollable:
            try:
                await _readable(fd)
            except PermissionError:  # a regular file or /dev/null: epoll refuses it,
                pollable = False  # and a read never waits
        try:
            data = os.read(fd, _READ)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        text = decoder.decode(data, final=not data)
        if text:
            await term.send(text)
        if not data:
            await term.send("\x04")
            return


async def _forward_sizes(resized: asyncio.Event, term: AsyncTerminal) -> None:
    """Send the window's size after each SIGWINCH (the latest size, once per burst)."""
    while True:
        await resized.wait()
        resized.clear()
        await term.resize(*_size())


async def _shell(settings: Settings, sandbox_id: str) -> int:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    out = sys.stdout.buffer
    async with settings.client() as client:
        sandbox = await connect_running(client, sandbox_id)
        cols, rows = _size()
        async with sandbox.terminal(cols=cols, rows=rows) as term:
            resized = asyncio.Event()
            with _raw(fd):
                helpers = [
                    asyncio.ensure_future(_forward_input(fd, term)),
                    asyncio.ensure_future(_forward_sizes(resized, term)),
                ]
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signal.SIGWINCH, resized.set)
                try:
                    async for text in term.output():
                        out.write(text.encode("utf-8", "replace"))
                        out.flush()
                finally:
                    loop.remove_signal_handler(signal.SIGWINCH)
                    for helper in helpers:
                        helper.cancel()
                    await asyncio.gather(*helpers, return_exceptions=True)
    code = term.exit_code
    return 1 if code is None else code


# ------------------------------------------------------------------------------------ exec
@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("sandbox_id", metavar="SANDBOX")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.option("--env", "-e", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="The command's lifetime on the server, in seconds.",
)
@click.option("--working-dir", default=None, help="Working directory (default: /workspace).")
@pass_settings
def exec_cmd(
    settings: Settings,
    sandbox_id: str,
    command: tuple[str, ...],
    env_pairs: tuple[str, ...],
    timeout: int,
    working_dir: str | None,
) -> int:
    """Run CMD with its ARGS in a sandbox; its output streams to ours, its exit code is ours.

    \b
    The words after -- are the command, quoted for the sandbox's shell as given.
    Ctrl-C kills the command and exits 130; a timeout exits 124.
      hopx exec sbx_abc -- ls -la /workspace
      hopx exec sbx_abc -- sh -c 'echo $HOME; exit 3'
    """
    if not command or not command[0]:
        raise CliError("give the command after --: hopx exec SANDBOX -- CMD [ARGS]...", EXIT_USAGE)
    env = parse_env(env_pairs, None)
    return arun(_exec(settings, sandbox_id, shlex.join(command), env, timeout, working_dir))


async def _exec(
    settings: Settings,
    sandbox_id: str,
    line: str,
    env: dict[str, str],
    timeout: int,
    working_dir: str | None,
) -> int:
    async with settings.client() as client:
        sandbox = await connect_running(client, sandbox_id)
        proc = await sandbox.commands.run(
            line, background=True, timeout=timeout, env=env, working_dir=working_dir
        )
        try:
            result = await interruptible(follow(proc, stream=True))
        except Interrupted:
            await proc.kill()
            note(f"interrupted; killed the command ({sandbox.id}/{proc.id})")
            return EXIT_INTERRUPTED
        return process_exit_code(result)
