"""``hopx kill`` and ``hopx rm``: end running processes, remove finished ones."""

from __future__ import annotations

import click

from hopx_async import ProcessNotFoundError

from ._common import (
    EXIT_API,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Settings,
    arun,
    default_sandbox,
    parse_ref,
)
from ._group import cli, pass_settings, sandbox_option
from ._lookup import connect_all, in_scope, processes_of
from ._output import note


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
            sandboxes = await connect_all(client, targets)
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
                sandboxes = {s.id: s for s in await in_scope(client, sandbox_flag, all_sandboxes)}
                listing = await processes_of(list(sandboxes.values()), None, None)
                todo = [ref for ref, info in listing if info.is_done]
            else:
                sandboxes = await connect_all(client, targets)
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
