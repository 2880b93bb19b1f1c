"""``hopx sandbox ...`` and ``hopx local ...``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import click

from hopx_async import (
    AsyncSandbox,
    SandboxInfo,
)

from ._common import DEFAULT_TEMPLATE, EXIT_OK, EXIT_USAGE, CliError, Settings, arun, parse_env
from ._group import OrderedGroup, cli, json_option, pass_settings
from ._output import fmt_time, plural, print_json, print_table


# -------------------------------------------------------------------------------- sandbox
@cli.group(cls=OrderedGroup)
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
