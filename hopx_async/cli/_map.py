"""``hopx map``: one script or command over many inputs, across several sandboxes."""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    BatchStats,
    Manifest,
    ProcessResult,
    ProgressCallback,
    SandboxNotFoundError,
    Task,
    ValidationError,
)

from ._common import (
    DEFAULT_TEMPLATE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    LANGUAGES,
    CliError,
    Interrupted,
    Settings,
    arun,
    interruptible,
    language_for,
    parse_env,
    read_source,
)
from ._group import cli, json_option, pass_settings
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


# ------------------------------------------------------------------------------------- map
@cli.command(name="map")
@click.argument("inputs", nargs=-1, metavar="[INPUT...]")
@click.option("-c", "code", metavar="CODE", default=None, help="Code to run for each input.")
@click.option(
    "--script",
    type=click.Path(dir_okay=False),
    default=None,
    help="A file of code to run for each input.",
)
@click.option(
    "--cmd",
    "command",
    metavar="COMMAND",
    default=None,
    help="A shell command for each input; {} is replaced by the quoted input, "
    "else the input is appended.",
)
@click.option(
    "--inputs-from",
    type=click.File("r"),
    default=None,
    metavar="FILE",
    help="One input per line (- for stdin).",
)
@click.option(
    "--language",
    "-l",
    type=click.Choice(LANGUAGES),
    default=None,
    help="Language of -c/--script (default: from the suffix, else python).",
)
@click.option(
    "--sandboxes",
    "-n",
    "sandbox_count",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="New sandboxes to spread the tasks over.",
)
@click.option(
    "--sandbox",
    "sandbox_ids",
    multiple=True,
    metavar="ID",
    help="Use these existing sandboxes instead (repeatable).",
)
@click.option(
    "--max-concurrency",
    "-j",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Tasks running at once.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Each task's lifetime on the server, in seconds.",
)
@click.option("--env", "-e", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the new sandboxes.")
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Record the batch in FILE; run again with the same FILE to resume it "
    "(finished tasks are taken from it, running ones waited on, no task starts twice).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Run a failed task (or one whose sandbox was lost) again, up to N times.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each task's stdout and stderr to DIR/N.out and DIR/N.err.",
)
@json_option
@pass_settings
def map_(
    settings: Settings,
    inputs: tuple[str, ...],
    code: str | None,
    script: str | None,
    command: str | None,
    inputs_from: Any,
    language: str | None,
    sandbox_count: int,
    sandbox_ids: tuple[str, ...],
    max_concurrency: int,
    timeout: int,
    env_pairs: tuple[str, ...],
    template: str,
    keep: bool,
    manifest: str | None,
    retries: int,
    output_dir: str | None,
    as_json: bool,
) -> int:
    """Run one script or command over many inputs, across several sandboxes.

    \b
    Each task sees its input in the environment as HOPX_INPUT (and its position as
    HOPX_INDEX). Progress shows while they run; at the end a summary, and each task's
    output is kept (--output-dir, or --json). Exit 0 when every task completed with 0,
    1 otherwise.

    \b
      hopx map -c 'import os; print(os.environ["HOPX_INPUT"].upper())' a b c
      hopx map --cmd 'wc -c {}' --inputs-from files.txt -n 4 -j 16
      hopx map --script job.py --inputs-from ids.txt --manifest batch.jsonl

    \b
    With --manifest, a map that died (Ctrl-C, a killed terminal, a lost machine) is
    resumed by running the same command again: it reuses the sandboxes it created, and
    prints how many tasks came from the manifest, were re-attached and were started.
    """
    if sum(x is not None for x in (code, script, command)) != 1:
        raise CliError("give one of -c CODE, --script FILE or --cmd COMMAND", EXIT_USAGE)
    items = list(inputs)
    if inputs_from is not None:
        items += [line.rstrip("\r\n") for line in inputs_from if line.strip()]
    if not items:
        raise CliError("no inputs: give INPUT... or --inputs-from FILE", EXIT_USAGE)
    base_env = parse_env(env_pairs, None)
    source = read_source(script, None) if script is not None else code
    lang = language_for(script, language)
    tasks = []
    for index, item in enumerate(items):
        env = {**base_env, "HOPX_INPUT": item, "HOPX_INDEX": str(index)}
        if command is not None:
            line = (
                command.replace("{}", shlex.quote(item))
                if "{}" in command
                else f"{command} {shlex.quote(item)}"
            )
            tasks.append(Task(command=line, env=env, timeout=timeout, name=f"map-{index}"))
        else:
            tasks.append(
                Task(code=source, language=lang, env=env, timeout=timeout, name=f"map-{index}")
            )
    return arun(
        _map(
            settings,
            tasks,
            items,
            sandbox_ids=sandbox_ids,
            count=sandbox_count,
            max_concurrency=max_concurrency,
            template=template,
            keep=keep,
            manifest=manifest,
            retries=retries,
            output_dir=output_dir,
            as_json=as_json,
        )
    )


async def _map(
    settings: Settings,
    tasks: list[Task],
    items: list[str],
    *,
    sandbox_ids: tuple[str, ...],
    count: int,
    max_concurrency: int,
    template: str,
    keep: bool,
    manifest: str | None,
    retries: int,
    output_dir: str | None,
    as_json: bool,
) -> int:
    started = time.monotonic()
    recorded: list[str] = []
    if manifest is not None:
        try:
            log = Manifest.open(manifest, tasks)
        except ValidationError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        recorded = list(log.sandboxes)
        finished = all(state.finished(retries) for state in log.states)
        log.close()
    else:
        finished = False
    stats = BatchStats()
    run = _Run(tasks, items, max_concurrency, manifest, retries, stats, quiet=as_json)
    interrupted = False
    async with settings.client() as client:
        created: list[AsyncSandbox] = []
        try:
            if sandbox_ids:
                sandboxes = list(
                    await asyncio.gather(*(client.sandboxes.connect(i) for i in sandbox_ids))
                )
            elif finished:  # every result is in the manifest: no sandbox needed
                sandboxes = []
            else:
                created = await _sandboxes_for(
                    client, recorded, manifest, tasks, min(count, len(tasks)), template
                )
                sandboxes = created
            results = await interruptible(run.go(client, sandboxes))
        except Interrupted:
            interrupted = True
            resumable = manifest is not None
            note(
                "interrupted; "
                + (
                    "killing the new sandboxes and their tasks"
                    if created and not keep and not resumable
                    else "started tasks keep running"
                )
                + (f"; run again with --manifest {manifest} to resume" if resumable else "")
            )
            return EXIT_INTERRUPTED
        finally:
            if created and (keep or (interrupted and manifest is not None)):
                note("kept the sandboxes " + " ".join(s.id for s in created))
            elif created:
                await asyncio.gather(*(s.kill() for s in created), return_exceptions=True)
    if manifest is not None:
        note(
            f"{stats.from_manifest} from the manifest, {stats.reattached} re-attached, "
            f"{stats.started} started" + (f" ({stats.retried} retried)" if stats.retried else "")
        )
    elapsed = time.monotonic() - started
    if output_dir is not None:
        _save_outputs(Path(output_dir), results)
    failed = sum(not r.ok for r in results)
    if as_json:
        print_json(
            [
                {"index": i, "input": item, **r.to_dict(json_ready=True)}
                for i, (item, r) in enumerate(zip(items, results, strict=True))
            ]
        )
    else:
        rows = [
            [
                str(i),
                item,
                r.status,
                fmt_exit(r.exit_code),
                fmt_duration(r.execution_time),
                _first_line(r.stdout if r.ok else r.stderr or r.stdout),
            ]
            for i, (item, r) in enumerate(zip(items, results, strict=True))
        ]
        print_table(("#", "INPUT", "STATUS", "EXIT", "DURATION", "OUTPUT"), rows, status_column=2)
        print(
            f"{plural(len(results), 'task')} on {plural(len(sandboxes), 'sandbox')} in "
            f"{fmt_duration(elapsed)}: {tally(results)}"
            + (f"; output in {output_dir}" if output_dir else ""),
            flush=True,
        )
    return EXIT_FAILED if failed else EXIT_OK


def _save_outputs(out: Path, results: Sequence[ProcessResult]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(results):
        (out / f"{index}.out").write_text(result.stdout, encoding="utf-8")
        (out / f"{index}.err").write_text(result.stderr, encoding="utf-8")


def _first_line(text: str, width: int = 50) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


async def _sandboxes_for(
    client: AsyncHopx,
    recorded: list[str],
    manifest: str | None,
    tasks: list[Task],
    count: int,
    template: str,
) -> list[AsyncSandbox]:
    """The sandboxes a manifest recorded (those still there), else ``count`` new ones, each
    recorded in the manifest as soon as it exists."""
    boxes: list[AsyncSandbox] = []
    for sandbox_id in recorded:
        try:
            boxes.append(await client.sandboxes.connect(sandbox_id))
        except SandboxNotFoundError:
            pass
    if boxes:
        return boxes
    made_all = await asyncio.gather(
        *(client.sandboxes.create(template) for _ in range(count)), return_exceptions=True
    )
    for made in made_all:
        if isinstance(made, AsyncSandbox):
            boxes.append(made)
    if manifest is not None and boxes:
        log = Manifest.open(manifest, tasks)
        for box in boxes:
            log.record_sandbox(box.id)
        log.close()
    for made in made_all:
        if isinstance(made, BaseException):
            await asyncio.gather(*(b.kill() for b in boxes), return_exceptions=True)
            raise made
    return boxes


class _Run:
    """``run_many`` with the progress shown as ``hopx map`` shows it."""

    def __init__(
        self,
        tasks: list[Task],
        items: list[str],
        max_concurrency: int,
        manifest: str | None,
        retries: int,
        stats: BatchStats,
        *,
        quiet: bool,
    ) -> None:
        self.tasks = tasks
        self.items = items
        self.max_concurrency = max_concurrency
        self.manifest = manifest
        self.retries = retries
        self.stats = stats
        self.quiet = quiet

    async def go(self, client: AsyncHopx, sandboxes: list[AsyncSandbox]) -> list[ProcessResult]:
        tasks, items, total = self.tasks, self.items, len(self.tasks)

        async def run(progress: ProgressCallback | None) -> list[ProcessResult]:
            return await client.run_many(
                tasks,
                sandboxes=sandboxes,
                max_concurrency=self.max_concurrency,
                on_progress=progress,
                manifest=self.manifest,
                retries=self.retries,
                stats=self.stats,
            )

        def plain(done: int, _total: int, result: ProcessResult) -> None:
            name = (result.name or "").split("@", 1)[0]
            index = int(name.rsplit("-", 1)[1]) if name.startswith("map-") else None
            label = items[index] if index is not None else result.process_id
            print(
                f"[{done}/{total}] {label} {result.status} exit={fmt_exit(result.exit_code)}",
                flush=True,
            )

        if self.quiet:
            return await run(None)
        if not interactive():
            return await run(plain)
        finished: list[ProcessResult] = []
        with progress_bar() as progress:
            bar = progress.add_task("running", total=total)

            def live(done: int, _total: int, result: ProcessResult) -> None:
                finished.append(result)
                progress.update(bar, completed=done, description=tally(finished))

            return await run(live)
