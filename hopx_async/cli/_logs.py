"""``hopx logs``: a process's output, all of it or followed as it appears."""

from __future__ import annotations

import sys

import click

from hopx_async import AsyncBackgroundProcess

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Interrupted,
    Settings,
    arun,
    default_sandbox,
    interruptible,
    parse_ref,
)
from ._group import cli, pass_settings, sandbox_option
from ._lookup import get_process


# ------------------------------------------------------------------------------------ logs
@cli.command()
@click.argument("ref", metavar="REF")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--stderr", "show_stderr", is_flag=True, help="Print stderr instead of stdout.")
@sandbox_option
@pass_settings
def logs(
    settings: Settings, ref: str, follow: bool, show_stderr: bool, sandbox_flag: str | None
) -> int:
    """Print a process's output (stdout, or stderr with --stderr).

    \b
    --follow prints what is there, then new output as it appears (each byte once),
    until the process ends.
    """
    target = parse_ref(ref, default_sandbox(sandbox_flag))
    stream = "stderr" if show_stderr else "stdout"

    async def go() -> int:
        async with settings.client() as client:
            sandbox = await client.sandboxes.connect(target.sandbox_id)
            info = await get_process(sandbox, target)
            proc = sandbox.process(target.process_id)
            if follow:
                try:
                    await interruptible(_copy_stream(proc, stream))
                except Interrupted:
                    return EXIT_INTERRUPTED
                return EXIT_OK
            done = await proc.wait() if info.is_done else info
            text = getattr(done, stream)
            sys.stdout.write(text)
            sys.stdout.flush()
            return EXIT_OK

    return arun(go())


async def _copy_stream(proc: AsyncBackgroundProcess, stream: str) -> None:
    async for chunk in proc.output():
        if chunk.stream == stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
