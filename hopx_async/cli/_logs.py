"""``hopx logs``: a process's output, all of it or followed as it appears."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timezone

import click

from hopx_async import AsyncBackgroundProcess, OutputChunk

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Interrupted,
    Settings,
    arun,
    default_sandbox,
    interruptible,
    parse_ref,
)
from ._group import cli, json_option, pass_settings, sandbox_option
from ._lookup import get_process

#: a line with its newline, or the unfinished rest
_LINES = re.compile(r"[^\n]*\n|[^\n]+")


# ------------------------------------------------------------------------------------ logs
@cli.command()
@click.argument("ref", metavar="REF")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--stderr", "show_stderr", is_flag=True, help="Print stderr instead of stdout.")
@click.option(
    "--timestamps",
    "-t",
    is_flag=True,
    help="Start each line with the time hopx received it (UTC).",
)
@json_option
@sandbox_option
@pass_settings
def logs(
    settings: Settings,
    ref: str,
    follow: bool,
    show_stderr: bool,
    timestamps: bool,
    as_json: bool,
    sandbox_flag: str | None,
) -> int:
    """Print a process's output (stdout, or stderr with --stderr).

    \b
    --follow prints what is there, then new output as it appears (each byte once),
    until the process ends. --json prints both streams, one JSON object per line
    and chunk: {"stream": "stdout", "text": "...", "time": "...", "gap": false}
    ("time" is when hopx received the chunk; "gap" says output before it was lost).
    --timestamps starts each line with that time.
      hopx logs -f --json sbx_1/proc_2 | jq -r 'select(.stream == "stderr") | .text'
    """
    if as_json and show_stderr:
        raise CliError(
            "--json prints both streams, each object naming its own: drop --stderr "
            "(filter with jq 'select(.stream == \"stderr\")')",
            EXIT_USAGE,
        )
    target = parse_ref(ref, default_sandbox(sandbox_flag))
    printer = ChunkPrinter(
        streams=("stdout", "stderr") if as_json else ("stderr" if show_stderr else "stdout",),
        as_json=as_json,
        timestamps=timestamps,
    )

    async def go() -> int:
        async with settings.client() as client:
            sandbox = await client.sandboxes.connect(target.sandbox_id)
            info = await get_process(sandbox, target)
            proc = sandbox.process(target.process_id)
            if follow:
                try:
                    await interruptible(_copy_output(proc, printer))
                except Interrupted:
                    return EXIT_INTERRUPTED
                return EXIT_OK
            done = await proc.wait() if info.is_done else info
            printer.print_all(
                OutputChunk(stream, getattr(done, stream) or "") for stream in ("stdout", "stderr")
            )
            return EXIT_OK

    return arun(go())


async def _copy_output(proc: AsyncBackgroundProcess, printer: ChunkPrinter) -> None:
    async for chunk in proc.output():
        printer.print(chunk)


class ChunkPrinter:
    """Writes chunks of output as text (one stream, optionally timestamped) or JSON lines."""

    def __init__(self, *, streams: tuple[str, ...], as_json: bool, timestamps: bool) -> None:
        self.streams = streams
        self.as_json = as_json
        self.timestamps = timestamps
        self._at_line_start = True

    def print_all(self, chunks: Iterable[OutputChunk]) -> None:
        for chunk in chunks:
            self.print(chunk)

    def print(self, chunk: OutputChunk) -> None:
        if chunk.stream not in self.streams or not chunk.text:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        if self.as_json:
            record = {"stream": chunk.stream, "text": chunk.text, "time": now, "gap": chunk.gap}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.timestamps:
            sys.stdout.write(self._stamped(chunk.text, now))
        else:
            sys.stdout.write(chunk.text)
        sys.stdout.flush()

    def _stamped(self, text: str, now: str) -> str:
        out: list[str] = []
        for line in _LINES.findall(text):
            if self._at_line_start:
                out.append(f"{now} ")
            out.append(line)
            self._at_line_start = line.endswith("\n")
        return "".join(out)
