"""``commands.stream`` sends the official SDK's ``{"command": "bash", "args": ["-c", CMD]}``
form, as ``commands.run`` does (issue 16, item 5): the ``openapi`` dialect execs ``command``
as a program with its ``args``, so shell syntax works only in that form.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hopx_async import AsyncHopx
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import Dialect

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def openapi_backend() -> Iterator[LocalBackend]:
    dialect = Dialect.named(
        "openapi", boot_seconds=0.0, agent_rate_per_minute=10_000, control_rate_per_minute=10_000
    )
    with LocalBackend.in_thread(dialect=dialect, isolation="none") as running:
        yield running


async def test_commands_stream_runs_shell_syntax_on_openapi(openapi_backend: LocalBackend) -> None:
    async with (
        AsyncHopx(api_key=openapi_backend.api_key, base_url=openapi_backend.base_url) as client,
        client.sandboxes.create("code-interpreter") as sbx,
    ):
        events = [event async for event in sbx.commands.stream("echo a; echo $((1+1)) | cat")]
        out = "".join(e.text for e in events if e.kind == "stdout")
        assert out == "a\n2\n"
        assert [e.exit_code for e in events if e.kind == "result"] == [0]
