"""Ids in request paths: percent-encoded whole, so that they never leave their resource."""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, HopxError, NotFoundError, SandboxNotFoundError, ValidationError

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


async def test_ids_never_leave_their_resource(backend: Any, proxy: FaultProxy) -> None:
    paths: list[str] = []
    proxy.on_request = lambda request: paths.append(request.raw_path)
    async with (
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        paths.clear()
        with pytest.raises(NotFoundError):
            await client.sandboxes.get("../templates/base")
        assert paths == ["/v1/sandboxes/..%2Ftemplates%2Fbase"]
        paths.clear()
        with pytest.raises(HopxError):
            await sandbox.get_process("../../../../v1/templates/base")
        agent = f"/sandboxes/{sandbox.id}/"
        assert paths, "the request was sent"
        assert all(p.startswith(agent) for p in paths), paths
        assert f"{agent}execute/processes/..%2F..%2F..%2F..%2Fv1%2Ftemplates%2Fbase" in paths
    async with AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as direct:
        with pytest.raises(SandboxNotFoundError):
            await direct.sandboxes.get("../templates/base")
        for dots in (".", ".."):
            with pytest.raises(ValidationError, match="sandbox_id"):
                await direct.sandboxes.get(dots)
