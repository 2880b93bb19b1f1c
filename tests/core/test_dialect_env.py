"""``env_vars`` at create and ``env.delete`` on a server that applies and masks as the
service does (issue 16, items 7 and 8; docs/wire.md 13.2 C1, 13.3 A9 to A11).

The strict dialects are not merged yet: the fault proxy drops ``env_vars`` from the create
body (the ``hopx`` dialect stores them without applying them) and hides the extensions
(no ``env_delete_keys``).
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, HopxError, PollPolicy

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


def not_applied(key: str, body: Any) -> Any:
    if key == "POST /v1/sandboxes":
        return {k: v for k, v in body.items() if k != "env_vars"}
    return body


async def test_env_vars_at_create_are_applied_afterwards(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    proxy.rewrite_request = not_applied
    async with proxied.sandboxes.create("base", env_vars={"GREETING": "hi"}) as sbx:
        assert proxy.bodies["POST /v1/sandboxes"][0]["env_vars"] == {"GREETING": "hi"}
        assert proxy.bodies["PATCH /env"] == [{"env_vars": {"GREETING": "hi"}, "merge": True}]
        result = await sbx.run_code("import os; print(os.environ['GREETING'])")
        assert result.stdout == "hi\n"


async def test_env_delete_never_writes_masked_secrets_back(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(
            api_key=backend.api_key, base_url=proxy.url, polling=PollPolicy(initial_interval=0.02)
        ) as client,
        client.sandboxes.create("base") as sbx,
    ):
        await sbx.env.update({"API_SECRET": "s3cret", "DEBUG": "1"})
        assert (await sbx.env.get("API_SECRET")) == "***MASKED***"
        with pytest.raises(HopxError, match="API_SECRET"):
            await sbx.env.delete("DEBUG")
        assert proxy.count("PUT", "/env") == 0
        out = await sbx.run_code("import os; print(os.environ['API_SECRET'])")
        assert out.stdout == "s3cret\n"
