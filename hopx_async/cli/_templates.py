"""``hopx template list``: the templates sandboxes are created from."""

from __future__ import annotations

from hopx_async import Template

from ._common import EXIT_OK, Settings, arun
from ._group import OrderedGroup, cli, json_option, pass_settings
from ._output import print_json, print_table


@cli.group(cls=OrderedGroup)
def template() -> None:
    """List the templates sandboxes are created from."""


TEMPLATE_HEADERS = ("NAME", "ID", "LANGUAGE", "ACTIVE", "DISPLAY NAME")


def _template_row(found: Template) -> list[str]:
    active = "" if found.is_active is None else ("yes" if found.is_active else "no")
    return [found.name, found.id, found.language or "", active, found.display_name or ""]


@template.command("list")
@json_option
@pass_settings
def template_list(settings: Settings, as_json: bool) -> int:
    """List templates (their names are what --template takes).

    \b
      hopx template list
      hopx template list --json | jq -r '.[].name'
    """

    async def go() -> int:
        async with settings.client() as client:
            templates = await client.sandboxes.list_templates()
        if as_json:
            print_json(templates)
        else:
            print_table(TEMPLATE_HEADERS, [_template_row(t) for t in templates])
        return EXIT_OK

    return arun(go())
