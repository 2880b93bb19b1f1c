"""The ``hopx`` group, its global options, and the options several commands share."""

from __future__ import annotations

import click

from hopx_async import (
    __version__,
)

from ._common import (
    EXIT_CODES_HELP,
    Settings,
)


# ------------------------------------------------------------------------------- the group
class OrderedGroup(click.Group):
    """Commands listed in the order they are defined."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


#: the order of ``hopx --help``: the process's life, then the rest
TOP_ORDER = (
    "run",
    "exec",
    "ps",
    "logs",
    "wait",
    "kill",
    "rm",
    "cp",
    "shell",
    "map",
    "sandbox",
    "template",
    "env",
    "local",
)


class TopGroup(click.Group):
    """The ``hopx`` group: commands in :data:`TOP_ORDER`, then any others."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(TOP_ORDER)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))


@click.group(
    cls=TopGroup,
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
