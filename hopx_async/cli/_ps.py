"""``hopx ps``: list background processes, once or live (--watch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hopx_async import AsyncSandbox, ProcessInfo, ProcessStatus

from ._common import EXIT_OK, EXIT_USAGE, CliError, Interrupted, Ref, Settings, arun, interruptible
from ._group import cli, json_option, pass_settings, sandbox_option
from ._lookup import in_scope, processes_of
from ._output import (
    duration_of,
    fmt_duration,
    fmt_exit,
    fmt_time,
    interactive,
    out_console,
    print_json,
    print_table,
    status_style,
)


def _ps_rows(listing: Sequence[tuple[Ref, ProcessInfo]]) -> list[list[str]]:
    return [
        [
            str(ref),
            info.name or "",
            info.status,
            fmt_exit(info.exit_code),
            fmt_time(info.started_at),
            fmt_duration(duration_of(info)),
        ]
        for ref, info in listing
    ]


PS_HEADERS = ("REF", "NAME", "STATUS", "EXIT", "STARTED", "DURATION")


@cli.command()
@sandbox_option
@click.option(
    "--all",
    "all_sandboxes",
    is_flag=True,
    help="Every running sandbox (the default without --sandbox and HOPX_SANDBOX).",
)
@click.option(
    "--status",
    type=click.Choice(sorted(ProcessStatus.TERMINAL | {"queued", "running"})),
    default=None,
    help="Only processes with this status.",
)
@click.option("--name", default=None, help="Only processes with this name.")
@click.option("--watch", "-w", is_flag=True, help="Refresh every 2 s until Ctrl-C.")
@json_option
@pass_settings
def ps(
    settings: Settings,
    sandbox_flag: str | None,
    all_sandboxes: bool,
    status: str | None,
    name: str | None,
    watch: bool,
    as_json: bool,
) -> int:
    """List background processes, with their references.

    \b
      hopx ps
      hopx ps --sandbox sbx_abc --status running
      hopx ps --json | jq -r '.[].ref'
    """
    if watch and as_json:
        raise CliError("--watch and --json do not go together", EXIT_USAGE)

    async def go() -> int:
        async with settings.client() as client:
            sandboxes = await in_scope(client, sandbox_flag, all_sandboxes)
            if not watch:
                listing = await processes_of(sandboxes, status, name)
                if as_json:
                    print_json(
                        [
                            {
                                "ref": str(r),
                                "sandbox_id": r.sandbox_id,
                                **i.to_dict(json_ready=True),
                            }
                            for r, i in listing
                        ]
                    )
                else:
                    print_table(PS_HEADERS, _ps_rows(listing), status_column=2)
                return EXIT_OK
            try:
                await interruptible(_watch(sandboxes, status, name))
            except Interrupted:
                pass
            return EXIT_OK

    return arun(go())


async def _watch(sandboxes: Sequence[AsyncSandbox], status: str | None, name: str | None) -> None:
    if not interactive():
        while True:
            listing = await processes_of(sandboxes, status, name)
            print(datetime.now().strftime("%H:%M:%S"))
            print_table(PS_HEADERS, _ps_rows(listing))
            print(flush=True)
            await asyncio.sleep(2)
    with Live(Table(), console=out_console(), auto_refresh=False) as live:
        while True:
            listing = await processes_of(sandboxes, status, name)
            table = Table(
                *PS_HEADERS,
                box=None,
                header_style="bold",
                caption=f"{datetime.now():%H:%M:%S}  Ctrl-C to stop",
            )
            for row in _ps_rows(listing):
                cells: list[str | Text] = list(row)
                cells[2] = Text(row[2], style=status_style(row[2]))
                table.add_row(*cells)
            live.update(table, refresh=True)
            await asyncio.sleep(2)
