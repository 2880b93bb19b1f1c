"""The official `hopx-ai` SDK's ``run_code_stream`` (its own WebSocket client) on the local backend.

It keeps only the scheme and host of ``public_host`` and opens ``ws://HOST/execute/stream``:
the local backend serves that route at its root and finds the sandbox by the token.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from hopx_async.local import LocalBackend

pytestmark = [
    pytest.mark.anyio,
    # hopx-ai 0.5.0 never closes the httpx clients of its class-level calls.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CODE = (
    "import sys\n"
    "for i in range(3):\n"
    "    print(f'step {i}', flush=True)\n"
    "print('warn', file=sys.stderr, flush=True)\n"
)


def _hopx_ai() -> Any:
    hopx_ai = pytest.importorskip("hopx_ai", reason="the official SDK (extra 'bench') is absent")
    pytest.importorskip("websockets", reason="the official SDK streams with 'websockets'")
    return hopx_ai


def _check(messages: list[dict[str, Any]]) -> None:
    stdout = "".join(m["data"] for m in messages if m["type"] == "stdout")
    stderr = "".join(m["data"] for m in messages if m["type"] == "stderr")
    assert stdout == "step 0\nstep 1\nstep 2\n"
    assert stderr == "warn\n"
    result = next(m for m in messages if m["type"] == "result")
    assert result["exit_code"] == 0
    assert isinstance(result["execution_time"], float)
    assert messages[-1]["type"] == "complete"
    assert messages[-1]["success"] is True


async def test_official_async_sdk_run_code_stream(backend: LocalBackend) -> None:
    hopx_ai = _hopx_ai()
    sandbox = await hopx_ai.AsyncSandbox.create(
        template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
    )
    try:
        messages = [m async for m in sandbox.run_code_stream(CODE, timeout=30)]
        _check(messages)
    finally:
        await sandbox.kill()
        await sandbox._client.close()
        if sandbox._agent_client is not None:
            await sandbox._agent_client.close()
    del sandbox
    gc.collect()


async def test_official_sync_sdk_run_code_stream(backend: LocalBackend) -> None:
    # The sync Sandbox's run_code_stream is an async generator too (in hopx-ai 0.5.0).
    hopx_ai = _hopx_ai()
    sandbox = hopx_ai.Sandbox.create(
        template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
    )
    try:
        messages = [m async for m in sandbox.run_code_stream(CODE, timeout=30)]
        _check(messages)
    finally:
        sandbox.kill()
        sandbox._client.close()
        if sandbox._agent_client is not None:
            sandbox._agent_client.close()
    del sandbox
    gc.collect()
