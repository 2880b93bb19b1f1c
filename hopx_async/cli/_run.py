"""``hopx run``: code in the foreground (live output, its exit code) or in the background."""

from __future__ import annotations

import sys

import click

from hopx_async import (
    AsyncBackgroundProcess,
    OutputUnavailableError,
    ProcessResult,
    ProcessStatus,
)

from ._common import (
    DEFAULT_TEMPLATE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LANGUAGES,
    Interrupted,
    Ref,
    Settings,
    arun,
    default_sandbox,
    interruptible,
    language_for,
    parse_env,
    process_exit_code,
    read_source,
)
from ._group import cli, json_option, pass_settings, sandbox_option
from ._lookup import connect_running
from ._output import note, print_json


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
            sandbox = await connect_running(client, sandbox_id)
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
                result = await interruptible(follow(proc, stream=not as_json))
            except Interrupted:
                killed = await proc.kill()
                what = "killed" if killed else "it had already ended:"
                note(f"interrupted; {what} process {ref}")
                return EXIT_INTERRUPTED
            if not result.output_available and not as_json:
                note(f"the server reports no output for process {ref}: its output is unavailable")
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


async def follow(proc: AsyncBackgroundProcess, *, stream: bool) -> ProcessResult:
    """Copy live output to stdout/stderr (when ``stream``), then the result."""
    if stream:
        try:
            async for chunk in proc.output():
                target = sys.stdout if chunk.stream == "stdout" else sys.stderr
                target.write(chunk.text)
                target.flush()
        except OutputUnavailableError:
            pass  # the result says so (output_available=False); _run notes it
    return await proc.wait()
