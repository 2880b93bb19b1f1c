"""The ``hopx`` commands (click), each a thin layer over the public :mod:`hopx_async` API."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from hopx_async import (
    AsyncBackgroundProcess,
    AsyncHopx,
    AsyncSandbox,
    ConfigurationError,
    HopxError,
    ProcessInfo,
    ProcessNotFoundError,
    ProcessResult,
    ProcessStatus,
    SandboxInfo,
    ValidationError,
    WaitTimeoutError,
    __version__,
)

from ._common import (
    EXIT_API,
    EXIT_CODES_HELP,
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
    describe,
    fmt_duration,
    fmt_exit,
    fmt_time,
    interruptible,
    parse_env,
    parse_ref,
    plural,
    print_json,
    status_style,
)
from ._fanout import Task, run_many

T = TypeVar("T")

DEFAULT_TEMPLATE = "code-interpreter"
LANGUAGES = ("python", "javascript", "bash", "go")
_SUFFIX_LANGUAGE = {".py": "python", ".js": "javascript", ".mjs": "javascript", ".sh": "bash"}
_SUFFIX_LANGUAGE[".go"] = "go"

err_console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """stdout as a rich console (plain when stdout is not a terminal)."""
    return Console(highlight=False)


def interactive() -> bool:
    """Whether stdout is a terminal: live progress and tables, else plain lines."""
    return sys.stdout.isatty()


def note(message: str) -> None:
    """One line for the user on stderr."""
    print(f"hopx: {message}", file=sys.stderr, flush=True)


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, status_column: int | None = None
) -> None:
    """A table: rich on a terminal, tab-free aligned columns when piped."""
    rows = [list(r) for r in rows]
    if interactive():
        table = Table(*headers, box=None, header_style="bold", pad_edge=False)
        for row in rows:
            cells: list[str | Text] = list(row)
            if status_column is not None:
                cells[status_column] = Text(
                    row[status_column], style=status_style(row[status_column])
                )
            table.add_row(*cells)
        out_console().print(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def language_for(path: str | None, given: str | None) -> str:
    if given:
        return given
    if path and path != "-":
        return _SUFFIX_LANGUAGE.get(Path(path).suffix.lower(), "python")
    return "python"


def read_source(path: str | None, code: str | None) -> str:
    """The code of ``FILE``, ``-c CODE`` or ``-`` (stdin)."""
    if (path is None) == (code is None):
        raise CliError("give one of FILE, -c CODE or - (stdin)", EXIT_USAGE)
    if code is not None:
        return code
    assert path is not None
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def process_exit_code(result: ProcessResult) -> int:
    """The exit code of ``hopx run`` for a finished process."""
    if result.status == ProcessStatus.TIMEOUT:
        return EXIT_TIMEOUT
    if result.status == ProcessStatus.COMPLETED:
        return result.exit_code or 0
    if result.exit_code:
        return result.exit_code
    return EXIT_FAILED


def duration_of(info: ProcessInfo | ProcessResult) -> float | None:
    if info.execution_time is not None:
        return info.execution_time
    if info.started_at is not None and not ProcessStatus.is_terminal(info.status):
        return (datetime.now(timezone.utc) - info.started_at).total_seconds()
    return None


# ------------------------------------------------------------------------------- the group
class _Group(click.Group):
    """Commands listed in the order they are defined."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=_Group,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--api-key",
    envvar="HOPX_API_KEY",
    show_envvar=True,
    default=None,
    help="API key (prefer the environment variable).",
)
@click.option(
    "--base-url", envvar="HOPX_BASE_URL", show_envvar=True, default=None, help="API base URL."
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, "--version", prog_name="hopx")
@click.pass_context
def cli(ctx: click.Context, api_key: str | None, base_url: str | None, debug: bool) -> None:
    """Run code in HopX sandboxes in the background, many at once, and watch it finish.

    \b
    A background process is named by one token, SANDBOX/PROCESS (for example
    sbx_abc/proc_def), printed by `run --background` and accepted by ps, logs,
    wait, kill and rm. Every command that prints data takes --json.
    """
    ctx.obj = Settings(api_key=api_key, base_url=base_url, debug=debug)


pass_settings = click.make_pass_decorator(Settings)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
sandbox_option = click.option(
    "--sandbox",
    "sandbox_flag",
    metavar="ID",
    default=None,
    help="Sandbox id (default: HOPX_SANDBOX).",
)


# ------------------------------------------------------------------------------------- run
@cli.command(name="run")
@click.argument("file", required=False, metavar="[FILE | -]")
@click.option("-c", "code", metavar="CODE", default=None, help="The code to run.")
@click.option(
    "--language",
    "-l",
    type=click.Choice(LANGUAGES),
    default=None,
    help="Language (default: from the file's suffix, else python).",
)
@click.option("--env", "-e", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None, help="KEY=VALUE lines.")
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="The process's lifetime on the server, in seconds.",
)
@click.option("--name", default=None, help="A name for the process.")
@sandbox_option
@click.option(
    "--template",
    default=DEFAULT_TEMPLATE,
    show_default=True,
    help="Template of the new sandbox, when no --sandbox is given.",
)
@click.option("--keep", is_flag=True, help="Keep the new sandbox (printed on stderr).")
@click.option("--working-dir", default=None, help="Working directory of the process.")
@click.option("--background", "-b", is_flag=True, help="Print the process reference and return.")
@json_option
@pass_settings
def run_cmd(
    settings: Settings,
    file: str | None,
    code: str | None,
    language: str | None,
    env_pairs: tuple[str, ...],
    env_file: str | None,
    timeout: int,
    name: str | None,
    sandbox_flag: str | None,
    template: str,
    keep: bool,
    working_dir: str | None,
    background: bool,
    as_json: bool,
) -> int:
    """Run code: FILE, -c CODE, or - for stdin.

    \b
    In the foreground, stdout and stderr stream live to the matching streams and hopx
    exits with the process's exit code (124 if it timed out). Ctrl-C kills the process
    and exits 130. With --background it prints the reference SANDBOX/PROCESS and returns.
    Without --sandbox (or HOPX_SANDBOX) a new sandbox is created and killed at the end,
    unless --keep or --background.

    \b
      hopx run script.py
      hopx run -c 'print(6 * 7)'
      echo 'echo hi' | hopx run --language bash -
      hopx run --background --name nap -c 'import time; time.sleep(30)'
    """
    source = read_source(file, code)
    env = parse_env(env_pairs, env_file)
    lang = language_for(file, language)
    return arun(
        _run(
            settings,
            source,
            lang=lang,
            env=env,
            timeout=timeout,
            name=name,
            sandbox_id=default_sandbox(sandbox_flag),
            template=template,
            keep=keep or background,
            working_dir=working_dir,
            background=background,
            as_json=as_json,
        )
    )


async def _run(
    settings: Settings,
    source: str,
    *,
    lang: str,
    env: dict[str, str],
    timeout: int,
    name: str | None,
    sandbox_id: str | None,
    template: str,
    keep: bool,
    working_dir: str | None,
    background: bool,
    as_json: bool,
) -> int:
    async with settings.client() as client:
        if sandbox_id:
            sandbox = await client.sandboxes.connect(sandbox_id)
            created = False
        else:
            sandbox = await client.sandboxes.create(template)
            created = True
        try:
            proc = await sandbox.run_code_background(
                source, language=lang, timeout=timeout, env=env, name=name, working_dir=working_dir
            )
            ref = Ref(sandbox.id, proc.id)
            if background:
                if as_json:
                    print_json(
                        {
                            "ref": str(ref),
                            "sandbox_id": sandbox.id,
                            "process_id": proc.id,
                            "name": proc.name,
                            "status": proc.status,
                        }
                    )
                else:
                    print(ref, flush=True)
                if created:
                    note(
                        f"started in the new sandbox {sandbox.id}; "
                        f"remove it with: hopx sandbox kill {sandbox.id}"
                    )
                return EXIT_OK
            try:
                result = await interruptible(_follow(proc, stream=not as_json))
            except Interrupted:
                killed = await proc.kill()
                what = "killed" if killed else "it had already ended:"
                note(f"interrupted; {what} process {ref}")
                return EXIT_INTERRUPTED
            if as_json:
                print_json(
                    {"ref": str(ref), "sandbox_id": sandbox.id, **result.to_dict(json_ready=True)}
                )
            elif result.status == ProcessStatus.TIMEOUT:
                note(f"process {ref} timed out after {timeout}s")
            elif result.status == ProcessStatus.KILLED:
                note(f"process {ref} was killed")
            elif result.status == ProcessStatus.FAILED and not result.exit_code:
                note(f"process {ref} failed")
            return process_exit_code(result)
        finally:
            if created and not keep:
                await sandbox.kill()
            elif created and not background:
                note(f"kept the sandbox {sandbox.id}")


async def _follow(proc: AsyncBackgroundProcess, *, stream: bool) -> ProcessResult:
    """Copy live output to stdout/stderr (when ``stream``), then the result."""
    if stream:
        async for chunk in proc.output():
            target = sys.stdout if chunk.stream == "stdout" else sys.stderr
            target.write(chunk.text)
            target.flush()
    return await proc.wait()


# -------------------------------------------------------------------------------------- ps
async def _scope(
    client: AsyncHopx, sandbox_flag: str | None, all_sandboxes: bool
) -> list[AsyncSandbox]:
    """The sandboxes a command looks at: --sandbox, HOPX_SANDBOX, or every running one."""
    chosen = None if all_sandboxes else default_sandbox(sandbox_flag)
    if chosen:
        return [await client.sandboxes.connect(chosen)]
    ids = [info.id async for info in client.sandboxes.list() if info.status == "running"]
    return list(await asyncio.gather(*(client.sandboxes.connect(i) for i in ids)))


async def _listing(
    sandboxes: Sequence[AsyncSandbox], status: str | None, name: str | None
) -> list[tuple[Ref, ProcessInfo]]:
    lists = await asyncio.gather(*(s.list_processes(status=status, name=name) for s in sandboxes))
    return [
        (Ref(s.id, info.process_id), info)
        for s, infos in zip(sandboxes, lists, strict=True)
        for info in infos
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
    with _progress_bar() as progress:
        bar = progress.add_task("waiting", total=total)
        async for result in client.as_completed(handles, timeout=timeout):
            results[result.process_id] = result
            progress.update(bar, advance=1, description=_tally(results.values()))


def _progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out_console(),
    )


def _tally(results: Iterable[ProcessResult]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "waiting"


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
    print(f"{plural(len(targets), 'process')}: {_tally(results.values())}", flush=True)


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
    output_dir: str | None,
    as_json: bool,
) -> int:
    started = time.monotonic()
    async with settings.client() as client:
        created: list[AsyncSandbox] = []
        try:
            if sandbox_ids:
                sandboxes = list(
                    await asyncio.gather(*(client.sandboxes.connect(i) for i in sandbox_ids))
                )
            else:
                count = min(count, len(tasks))
                for made in await asyncio.gather(
                    *(client.sandboxes.create(template) for _ in range(count)),
                    return_exceptions=True,
                ):
                    if isinstance(made, BaseException):
                        raise made
                    created.append(made)
                sandboxes = created
            results = await interruptible(
                _map_progress(tasks, items, sandboxes, max_concurrency, quiet=as_json)
            )
        except Interrupted:
            note(
                "interrupted; "
                + (
                    "killing the new sandboxes and their tasks"
                    if created and not keep
                    else "started tasks keep running"
                )
            )
            return EXIT_INTERRUPTED
        finally:
            if created and not keep:
                await asyncio.gather(*(s.kill() for s in created), return_exceptions=True)
            elif created:
                note("kept the sandboxes " + " ".join(s.id for s in created))
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
            f"{fmt_duration(elapsed)}: {_tally(results)}"
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


async def _map_progress(
    tasks: list[Task],
    items: list[str],
    sandboxes: list[AsyncSandbox],
    max_concurrency: int,
    *,
    quiet: bool,
) -> list[ProcessResult]:
    total = len(tasks)

    def plain(done: int, _total: int, result: ProcessResult) -> None:
        name = result.name or ""
        index = int(name.rsplit("-", 1)[1]) if name.startswith("map-") else None
        label = items[index] if index is not None else result.process_id
        print(
            f"[{done}/{total}] {label} {result.status} exit={fmt_exit(result.exit_code)}",
            flush=True,
        )

    if quiet:
        return await run_many(tasks, sandboxes=sandboxes, max_concurrency=max_concurrency)
    if not interactive():
        return await run_many(
            tasks, sandboxes=sandboxes, max_concurrency=max_concurrency, on_progress=plain
        )
    finished: list[ProcessResult] = []
    with _progress_bar() as progress:
        bar = progress.add_task("running", total=total)

        def live(done: int, _total: int, result: ProcessResult) -> None:
            finished.append(result)
            progress.update(bar, completed=done, description=_tally(finished))

        return await run_many(
            tasks, sandboxes=sandboxes, max_concurrency=max_concurrency, on_progress=live
        )


# -------------------------------------------------------------------------------- sandbox
@cli.group(cls=_Group)
def sandbox() -> None:
    """Create, list, inspect and kill sandboxes."""


SANDBOX_HEADERS = ("ID", "STATUS", "TEMPLATE", "CREATED", "EXPIRES")


def _sandbox_row(info: SandboxInfo) -> list[str]:
    return [
        info.id,
        info.status,
        info.template_name or info.template_id or "",
        fmt_time(info.created_at),
        fmt_time(info.expires_at),
    ]


@sandbox.command("create")
@click.option("--template", default=DEFAULT_TEMPLATE, show_default=True)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Kill it automatically after this many seconds.",
)
@click.option(
    "--env",
    "-e",
    "env_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Environment of every process in it (repeatable).",
)
@click.option("--region", default=None)
@json_option
@pass_settings
def sandbox_create(
    settings: Settings,
    template: str,
    timeout: int | None,
    env_pairs: tuple[str, ...],
    region: str | None,
    as_json: bool,
) -> int:
    """Create a sandbox and print its id (export HOPX_SANDBOX=$(hopx sandbox create))."""
    env = parse_env(env_pairs, None)

    async def go() -> int:
        async with settings.client() as client:
            made = await client.sandboxes.create(
                template, timeout_seconds=timeout, env_vars=env or None, region=region
            )
            if as_json:
                print_json(made.info)
            else:
                print(made.id, flush=True)
        return EXIT_OK

    return arun(go())


@sandbox.command("list")
@click.option("--status", default=None, help="Only sandboxes with this status.")
@json_option
@pass_settings
def sandbox_list(settings: Settings, status: str | None, as_json: bool) -> int:
    """List sandboxes."""

    async def go() -> int:
        async with settings.client() as client:
            infos = [i async for i in client.sandboxes.list(status=status)]
        if as_json:
            print_json(infos)
        else:
            print_table(SANDBOX_HEADERS, [_sandbox_row(i) for i in infos])
        return EXIT_OK

    return arun(go())


@sandbox.command("info")
@click.argument("sandbox_id", metavar="ID")
@json_option
@pass_settings
def sandbox_info(settings: Settings, sandbox_id: str, as_json: bool) -> int:
    """Show one sandbox."""

    async def go() -> int:
        async with settings.client() as client:
            info = await client.sandboxes.get(sandbox_id)
        if as_json:
            print_json(info)
        else:
            for key, value in info.to_dict(json_ready=True).items():
                if value is not None:
                    print(f"{key + ':':<17} {value}")
        return EXIT_OK

    return arun(go())


@sandbox.command("kill")
@click.argument("sandbox_ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "all_sandboxes", is_flag=True, help="Every sandbox.")
@pass_settings
def sandbox_kill(settings: Settings, sandbox_ids: tuple[str, ...], all_sandboxes: bool) -> int:
    """Kill sandboxes and everything running in them."""
    if bool(sandbox_ids) == all_sandboxes:
        raise CliError("give ID... or --all", EXIT_USAGE)

    async def go() -> int:
        async with settings.client() as client:
            ids = list(sandbox_ids)
            if all_sandboxes:
                ids = [i.id async for i in client.sandboxes.list() if i.status != "killed"]
            for sandbox_id in ids:
                await (await client.sandboxes.connect(sandbox_id)).kill()
                print(f"killed {sandbox_id}", flush=True)
        return EXIT_OK

    return arun(go())


def _sandbox_action(name: str, doc: str, action: Callable[[AsyncSandbox], Awaitable[None]]) -> None:
    @sandbox.command(name, help=doc)
    @click.argument("sandbox_id", metavar="ID")
    @pass_settings
    def command(settings: Settings, sandbox_id: str) -> int:
        async def go() -> int:
            async with settings.client() as client:
                await action(await client.sandboxes.connect(sandbox_id))
            print(f"{name}d {sandbox_id}", flush=True)
            return EXIT_OK

        return arun(go())


_sandbox_action("pause", "Pause a sandbox; its processes stop until resume.", lambda s: s.pause())
_sandbox_action("resume", "Resume a paused sandbox.", lambda s: s.resume())


@sandbox.command("timeout")
@click.argument("sandbox_id", metavar="ID")
@click.argument("seconds", type=click.IntRange(min=1))
@pass_settings
def sandbox_timeout(settings: Settings, sandbox_id: str, seconds: int) -> int:
    """Kill the sandbox automatically SECONDS from now."""

    async def go() -> int:
        async with settings.client() as client:
            await (await client.sandboxes.connect(sandbox_id)).set_timeout(seconds)
        print(f"{sandbox_id} will be killed in {plural(seconds, 'second')}", flush=True)
        return EXIT_OK

    return arun(go())


# ---------------------------------------------------------------------------------- local
@cli.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def local(args: tuple[str, ...]) -> int:
    """The embedded local backend: serve | start | stop | status (see hopx local -h).

    \b
      eval "$(hopx local start --state-dir .hopx-local)"
      hopx local status --state-dir .hopx-local
      hopx local stop --state-dir .hopx-local
    """
    from hopx_async.local.__main__ import main as local_main

    try:
        return local_main(list(args), prog="hopx local")
    except SystemExit as exc:  # argparse: --help, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# ------------------------------------------------------------------------------ entry point
def execute(argv: list[str]) -> int:
    """Run ``hopx`` and map every outcome to an exit code and at most one line on stderr."""
    debug = "--debug" in argv or os.environ.get("HOPX_DEBUG") == "1"
    try:
        result = cli.main(args=argv, prog_name="hopx", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        note("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except CliError as exc:
        return _fail(str(exc), exc.code, debug)
    except (Interrupted, KeyboardInterrupt):
        note("interrupted")
        return EXIT_INTERRUPTED
    except WaitTimeoutError as exc:
        return _fail(describe(exc), EXIT_TIMEOUT, debug)
    except (ValidationError, ConfigurationError) as exc:
        return _fail(describe(exc), EXIT_USAGE, debug)
    except HopxError as exc:
        return _fail(describe(exc), EXIT_API, debug)
    except BrokenPipeError:
        # the reader went away (hopx ps | head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        return _fail(
            f"unexpected {type(exc).__name__}: {describe(exc)} (--debug for the traceback)",
            EXIT_FAILED,
            debug,
        )
    return result if isinstance(result, int) else EXIT_OK


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"hopx: error: {message}", file=sys.stderr, flush=True)
    return code
