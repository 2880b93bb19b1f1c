"""Process commands on SANDBOX/PROCESS references: ps, logs, wait, kill and rm."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hopx_async import (
    AsyncBackgroundProcess,
    AsyncHopx,
    AsyncSandbox,
    NotFoundError,
    ProcessInfo,
    ProcessNotFoundError,
    ProcessResult,
    ProcessStatus,
    WaitTimeoutError,
)

from ._common import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    Interrupted,
    Ref,
    Settings,
    default_sandbox,
    fmt_duration,
    fmt_exit,
    fmt_time,
    interruptible,
    parse_ref,
    plural,
    print_json,
    status_style,
)
from ._group import cli, json_option, pass_settings, sandbox_option
from ._output import (
    arun,
    duration_of,
    interactive,
    note,
    out_console,
    print_table,
    progress_bar,
    tally,
)

T = TypeVar("T")


# -------------------------------------------------------------------------------------- ps
async def _scope(
    client: AsyncHopx, sandbox_flag: str | None, all_sandboxes: bool
) -> list[AsyncSandbox]:
    """The sandboxes a command looks at: --sandbox, HOPX_SANDBOX, or every running one."""
    chosen = None if all_sandboxes else default_sandbox(sandbox_flag)
    if chosen:
        return [await client.sandboxes.connect(chosen)]
    ids = [info.id async for info in client.sandboxes.list() if info.status == "running"]
    found = await asyncio.gather(
        *(client.sandboxes.connect(i) for i in ids), return_exceptions=True
    )
    return [_value_or_raise(s) for s in found if not isinstance(s, NotFoundError)]


def _value_or_raise(value: T | BaseException) -> T:
    """``value``, or raise it if it is an error (from ``gather(return_exceptions=True)``)."""
    if isinstance(value, BaseException):
        raise value
    return value


async def _listing(
    sandboxes: Sequence[AsyncSandbox], status: str | None, name: str | None
) -> list[tuple[Ref, ProcessInfo]]:
    """Every process of ``sandboxes``; a sandbox killed meanwhile counts as having none."""
    lists = await asyncio.gather(
        *(s.list_processes(status=status, name=name) for s in sandboxes), return_exceptions=True
    )
    return [
        (Ref(s.id, info.process_id), info)
        for s, infos in zip(sandboxes, lists, strict=True)
        if not isinstance(infos, NotFoundError)
        for info in _value_or_raise(infos)
    ]


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
            sandboxes = await _scope(client, sandbox_flag, all_sandboxes)
            if not watch:
                listing = await _listing(sandboxes, status, name)
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
            listing = await _listing(sandboxes, status, name)
            print(datetime.now().strftime("%H:%M:%S"))
            print_table(PS_HEADERS, _ps_rows(listing))
            print(flush=True)
            await asyncio.sleep(2)
    with Live(Table(), console=out_console(), auto_refresh=False) as live:
        while True:
            listing = await _listing(sandboxes, status, name)
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
            info = await _get_process(sandbox, target)
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


async def _get_process(sandbox: AsyncSandbox, ref: Ref) -> ProcessInfo:
    try:
        return await sandbox.get_process(ref.process_id)
    except ProcessNotFoundError:
        raise CliError(f"no process {ref.process_id} in sandbox {ref.sandbox_id}") from None


async def _connect_all(client: AsyncHopx, refs: Sequence[Ref]) -> dict[str, AsyncSandbox]:
    ids = sorted({r.sandbox_id for r in refs})
    sandboxes = await asyncio.gather(*(client.sandboxes.connect(i) for i in ids))
    return dict(zip(ids, sandboxes, strict=True))


# ------------------------------------------------------------------------------------ wait
@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop waiting after this many seconds (exit 124; they keep running).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if any process failed or was killed (124 if one timed out).",
)
@sandbox_option
@json_option
@pass_settings
def wait(
    settings: Settings,
    refs: tuple[str, ...],
    timeout: float | None,
    check: bool,
    sandbox_flag: str | None,
    as_json: bool,
) -> int:
    """Wait for processes to end: a live progress bar and a summary on a terminal,
    one line per process when piped.

    \b
    Exit 0 once all have ended (with --check: and all completed), 124 when --timeout
    expires first. Ctrl-C stops waiting (exit 130); the processes keep running.
    """
    targets = [parse_ref(r, default_sandbox(sandbox_flag)) for r in refs]

    async def go() -> int:
        async with settings.client() as client:
            sandboxes = await _connect_all(client, targets)
            handles = []
            for target in targets:
                await _get_process(sandboxes[target.sandbox_id], target)
                handles.append(sandboxes[target.sandbox_id].process(target.process_id))
            by_id = {t.process_id: t for t in targets}
            results: dict[str, ProcessResult] = {}
            try:
                await interruptible(
                    _collect(client, handles, timeout, results, by_id, quiet=as_json)
                )
            except Interrupted:
                left = len(targets) - len(results)
                note(f"stopped waiting; {left} of {len(targets)} still running (not killed)")
                return EXIT_INTERRUPTED
            except WaitTimeoutError:
                _summary(targets, results, as_json=as_json)
                note(
                    f"{len(targets) - len(results)} of {plural(len(targets), 'process')} "
                    f"still running after {timeout:g}s (they keep running)"
                )
                return EXIT_TIMEOUT
            _summary(targets, results, as_json=as_json)
            if not check:
                return EXIT_OK
            statuses = {r.status for r in results.values()}
            if statuses & {ProcessStatus.FAILED, ProcessStatus.KILLED}:
                return EXIT_FAILED
            if ProcessStatus.TIMEOUT in statuses:
                return EXIT_TIMEOUT
            return EXIT_OK

    return arun(go())


async def _collect(
    client: AsyncHopx,
    handles: Sequence[AsyncBackgroundProcess],
    timeout: float | None,
    results: dict[str, ProcessResult],
    refs: dict[str, Ref],
    *,
    quiet: bool,
) -> None:
    """Wait for every handle; show progress; fill ``results`` as they end."""
    total = len(handles)
    if not interactive():
        note(f"waiting for {plural(total, 'process')}")
    if quiet:
        async for result in client.as_completed(handles, timeout=timeout):
            results[result.process_id] = result
        return
    if not interactive():
        async for result in client.as_completed(handles, timeout=timeout):
            results[result.process_id] = result
            ref = refs[result.process_id]
            print(
                f"[{len(results)}/{total}] {ref} {result.status} exit={fmt_exit(result.exit_code)}"
                f" {fmt_duration(result.execution_time)}".rstrip(),
                flush=True,
            )
        return
    with progress_bar() as progress:
        bar = progress.add_task("waiting", total=total)
        async for result in client.as_completed(handles, timeout=timeout):
            results[result.process_id] = result
            progress.update(bar, advance=1, description=tally(results.values()))


def _summary(targets: Sequence[Ref], results: dict[str, ProcessResult], *, as_json: bool) -> None:
    if as_json:
        print_json(
            [
                {
                    "ref": str(t),
                    "sandbox_id": t.sandbox_id,
                    **results[t.process_id].to_dict(json_ready=True),
                }
                if t.process_id in results
                else {
                    "ref": str(t),
                    "sandbox_id": t.sandbox_id,
                    "process_id": t.process_id,
                    "status": "running",
                }
                for t in targets
            ]
        )
        return
    if interactive():
        rows = []
        for t in targets:
            r = results.get(t.process_id)
            if r is None:
                rows.append([str(t), "", "running", "", ""])
            else:
                rows.append(
                    [
                        str(t),
                        r.name or "",
                        r.status,
                        fmt_exit(r.exit_code),
                        fmt_duration(r.execution_time),
                    ]
                )
        print_table(("REF", "NAME", "STATUS", "EXIT", "DURATION"), rows, status_column=2)
    print(f"{plural(len(targets), 'process')}: {tally(results.values())}", flush=True)


# ------------------------------------------------------------------------------------ kill
@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@sandbox_option
@pass_settings
def kill(settings: Settings, refs: tuple[str, ...], sandbox_flag: str | None) -> int:
    """Kill background processes (each with its children)."""
    targets = [parse_ref(r, default_sandbox(sandbox_flag)) for r in refs]

    async def go() -> int:
        code = EXIT_OK
        async with settings.client() as client:
            sandboxes = await _connect_all(client, targets)
            for target in targets:
                try:
                    await sandboxes[target.sandbox_id].kill_process(target.process_id)
                except ProcessNotFoundError:
                    note(f"{target}: no such running process (it may have ended)")
                    code = EXIT_API
                    continue
                print(f"killed {target}", flush=True)
        return code

    return arun(go())


# -------------------------------------------------------------------------------------- rm
@cli.command()
@click.argument("refs", nargs=-1, metavar="[REF...]")
@click.option("--finished", is_flag=True, help="Every finished process of the sandbox(es).")
@sandbox_option
@click.option("--all", "all_sandboxes", is_flag=True, help="With --finished: every sandbox.")
@pass_settings
def rm(
    settings: Settings,
    refs: tuple[str, ...],
    finished: bool,
    sandbox_flag: str | None,
    all_sandboxes: bool,
) -> int:
    """Remove finished processes and their output.

    \b
      hopx rm sbx_abc/proc_def
      hopx rm --finished --sandbox sbx_abc
    """
    if bool(refs) == finished:
        raise CliError("give REF... or --finished", EXIT_USAGE)
    targets = [parse_ref(r, default_sandbox(sandbox_flag)) for r in refs]

    async def go() -> int:
        code = EXIT_OK
        async with settings.client() as client:
            if finished:
                sandboxes = {s.id: s for s in await _scope(client, sandbox_flag, all_sandboxes)}
                listing = await _listing(list(sandboxes.values()), None, None)
                todo = [ref for ref, info in listing if info.is_done]
            else:
                sandboxes = await _connect_all(client, targets)
                todo = targets
            for target in todo:
                try:
                    await sandboxes[target.sandbox_id].remove_process(target.process_id)
                except ProcessNotFoundError:
                    note(f"{target}: no such process")
                    code = EXIT_API
                    continue
                print(f"removed {target}", flush=True)
            if finished and not todo:
                note("no finished processes")
        return code

    return arun(go())
