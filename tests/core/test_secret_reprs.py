"""Credentials stay out of tracebacks: a failed request's traceback (as pytest, a logger or
an error tracker renders it, with every frame's arguments) shows neither the API key nor a
sandbox's token."""

from __future__ import annotations

from typing import Any

import pytest
from _pytest._code import ExceptionInfo

from hopx_async import AsyncHopx, RetryPolicy, ServerError
from hopx_async._utils import SecretHeaders

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


def test_secret_headers_name_their_keys_only() -> None:
    headers = SecretHeaders({"Authorization": "Bearer tok_secret", "X-API-Key": "key_secret"})
    assert "secret" not in repr(headers) and "secret" not in str(headers)
    assert "Authorization" in repr(headers)
    assert headers["X-API-Key"] == "key_secret"  # still the value for the request


async def test_a_failed_requests_traceback_shows_no_credential(
    backend: Any, proxy: FaultProxy
) -> None:
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            retries=RetryPolicy(max_retries=0),
        ) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proxy.inject(Fault("GET", r"/execute/processes$", 502, times=10))
        proxy.inject(Fault("GET", r"/v1/sandboxes/[^/]+$", 502, times=10))
        rendered = []
        for call in (sandbox.list_processes, sandbox.get_info):
            with pytest.raises(ServerError) as caught:
                await call()
            info = ExceptionInfo.from_exc_info((caught.type, caught.value, caught.tb))
            rendered.append(str(info.getrepr(style="long", funcargs=True)))
        text = "\n".join(rendered)
        assert "headers = " in text  # the frames' arguments are there ...
        assert backend.api_key not in text  # ... but no credential
        assert "'Authorization': '***'" in text
        assert "Bearer hopx1." not in text  # the local backend's tokens: hopx1.<claims>.<mac>
