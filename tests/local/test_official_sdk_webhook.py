"""The official `hopx-ai` SDK's ``run_code_async`` (sync and async) with a real receiver."""

from __future__ import annotations

import functools
import gc
import hashlib
import hmac
import json
from typing import Any

import anyio
import pytest

from hopx_async import verify_webhook
from hopx_async.local import LocalBackend

from .receiver import Receiver

pytestmark = pytest.mark.anyio

SECRET = "official-sdk-secret"


def _official() -> Any:
    # importorskip also silences the deprecation warnings hopx-ai's own imports raise
    return pytest.importorskip("hopx_ai", reason="hopx-ai is not installed (extra 'bench')")


def _check(hit_body: bytes, answer: dict[str, Any], stdout: str) -> None:
    result = json.loads(hit_body)
    assert result["execution_id"] == answer["execution_id"]
    assert result["status"] == "completed"
    assert result["stdout"] == stdout


# hopx-ai 0.5.0 never closes the httpx clients of its class-level calls (docs/wire.md,
# section 5); collect them inside each test, where their ResourceWarnings are expected.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_official_sync_run_code_async(backend: LocalBackend) -> None:
    hopx_ai = _official()
    async with Receiver() as receiver:
        sandbox = await anyio.to_thread.run_sync(
            lambda: hopx_ai.Sandbox.create(
                template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
            )
        )
        try:
            start = functools.partial(
                sandbox.run_code_async,
                "print('official sync')",
                callback_url=f"{receiver.url}/sync",
                callback_headers={"Authorization": "Bearer receiver"},
                callback_signature_secret=SECRET,
            )
            answer: dict[str, Any] = await anyio.to_thread.run_sync(start)
            assert answer["status"] == "queued"
            assert answer["callback_url"] == f"{receiver.url}/sync"
            (hit,) = await receiver.hits_to("/sync", 1)
        finally:
            await anyio.to_thread.run_sync(sandbox.kill)
            sandbox._client.close()
    verify_webhook(SECRET, hit.headers, hit.body)
    # the documented signed string: the timestamp's digits then the body, no separator
    signed = hit.headers["X-HOPX-Timestamp"].encode() + hit.body
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hit.headers["X-HOPX-Signature"] == f"sha256={digest}"
    assert hit.headers["Authorization"] == "Bearer receiver"
    _check(hit.body, answer, "official sync\n")
    del sandbox
    gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_official_async_run_code_async(backend: LocalBackend) -> None:
    hopx_ai = _official()
    async with Receiver() as receiver:
        sandbox = await hopx_ai.AsyncSandbox.create(
            template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
        )
        try:
            answer = await sandbox.run_code_async(
                "print('official async')",
                f"{receiver.url}/async",
                callback_signature_secret=SECRET,
            )
            (hit,) = await receiver.hits_to("/async", 1)
        finally:
            await sandbox.kill()
            if sandbox._agent_client is not None:
                await sandbox._agent_client.close()
            await sandbox._client.close()
    verify_webhook(SECRET, hit.headers, hit.body)
    _check(hit.body, answer, "official async\n")
    del sandbox
    gc.collect()
