"""The control plane's credential (docs/wire.md 13.2 C0, note N7): the SDK sends
``X-API-Key``, which every ``/v1`` route of the OpenAPI document requires; the ``openapi``
dialect refuses ``Authorization: Bearer KEY`` (a session JWT's scheme there), the others
take both.
"""

from __future__ import annotations

import aiohttp
import pytest

from hopx_async import AsyncHopx
from hopx_async.local import LocalBackend

pytestmark = pytest.mark.anyio


async def test_the_sdk_sends_x_api_key_and_openapi_refuses_bearer(
    dialect_backend: LocalBackend, dialect: str
) -> None:
    url = dialect_backend.base_url + "/v1/sandboxes"
    key = dialect_backend.api_key
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"X-API-Key": key}) as resp:
            assert resp.status == 200
        async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == (401 if dialect == "openapi" else 200)
    async with AsyncHopx(api_key=key, base_url=dialect_backend.base_url) as client:
        assert await client.sandboxes.list_templates()
