"""``hopx env list|set|unset``: a sandbox's environment variables (``sandbox.env``)."""

from __future__ import annotations

import click

from ._common import EXIT_OK, EXIT_USAGE, CliError, Settings, arun, default_sandbox, parse_env
from ._group import OrderedGroup, cli, json_option, pass_settings, sandbox_option
from ._lookup import connect_running
from ._output import print_json, print_table


@cli.group(cls=OrderedGroup)
def env() -> None:
    """Show and change a sandbox's environment variables (its new processes get them)."""


def _sandbox_id(flag: str | None) -> str:
    chosen = default_sandbox(flag)
    if not chosen:
        raise CliError("no sandbox: use --sandbox ID or HOPX_SANDBOX", EXIT_USAGE)
    return chosen


@env.command("list")
@sandbox_option
@json_option
@pass_settings
def env_list(settings: Settings, sandbox_flag: str | None, as_json: bool) -> int:
    """List every variable (the base environment too); secrets are shown masked.

    \b
      hopx env list --sandbox sbx_abc
      hopx env list --json | jq -r .PATH
    """
    sandbox_id = _sandbox_id(sandbox_flag)

    async def go() -> int:
        async with settings.client() as client:
            sandbox = await connect_running(client, sandbox_id)
            found = await sandbox.env.get_all()
        if as_json:
            print_json(dict(sorted(found.items())))
        else:
            print_table(("NAME", "VALUE"), [[k, v] for k, v in sorted(found.items())])
        return EXIT_OK

    return arun(go())


@env.command("set")
@sandbox_option
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option("--env-file", default=None, help="Read KEY=VALUE lines from this file.")
@click.option("--replace", is_flag=True, help="Replace every variable set before (default: merge).")
@pass_settings
def env_set(
    settings: Settings,
    sandbox_flag: str | None,
    pairs: tuple[str, ...],
    env_file: str | None,
    replace: bool,
) -> int:
    """Set variables, keeping the others (--replace: only these remain).

    \b
      hopx env set DEBUG=1 MODE=batch
      hopx env set --env-file .env --replace
    """
    sandbox_id = _sandbox_id(sandbox_flag)
    variables = parse_env((), env_file)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{pair!r}: expected KEY=VALUE", EXIT_USAGE)
        variables[key] = value
    if not variables and not replace:
        raise CliError("nothing to set: give KEY=VALUE pairs or --env-file", EXIT_USAGE)

    async def go() -> int:
        async with settings.client() as client:
            sandbox = await connect_running(client, sandbox_id)
            if replace:
                await sandbox.env.set(variables)
            else:
                await sandbox.env.update(variables)
        return EXIT_OK

    return arun(go())


@env.command("unset")
@sandbox_option
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_settings
def env_unset(settings: Settings, sandbox_flag: str | None, names: tuple[str, ...]) -> int:
    """Remove variables (no error for one that is not set).

    \b
      hopx env unset DEBUG MODE
    """
    sandbox_id = _sandbox_id(sandbox_flag)

    async def go() -> int:
        async with settings.client() as client:
            sandbox = await connect_running(client, sandbox_id)
            for name in names:
                await sandbox.env.delete(name)
        return EXIT_OK

    return arun(go())
