"""``hopx wait``: wait for processes to end, with progress and a summary."""

from __future__ import annotations

from collections.abc import Sequence

import click

from hopx_async import (
    AsyncBackgroundProcess,
    AsyncHopx,
    ProcessResult,
    ProcessStatus,
    WaitTimeoutError,
)

from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Interrupted,
    Ref,
    Settings,
    arun,
    default_sandbox,
    interruptible,
    parse_ref,
)
from ._group import cli, json_option, pass_settings, sandbox_option
from ._lookup import connect_all, get_process
from ._output import (
    fmt_duration,
    fmt_exit,
    interactive,
    note,
    plural,
    print_json,
    print_table,
    progress_bar,
    tally,
)


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
            sandboxes = await connect_all(client, targets)
            handles = []
            for target in targets:
                await get_process(sandboxes[target.sandbox_id], target)
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
