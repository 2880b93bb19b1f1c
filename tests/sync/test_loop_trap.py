"""A blocking call on the thread whose event loop runs an in-process LocalBackend fails at
once, naming the loop and the way out, instead of hanging until its request times out."""

from __future__ import annotations

import asyncio
import re

import pytest

import hopx_sync
from hopx_async.local import LocalBackend


@pytest.mark.anyio
async def test_a_sync_call_next_to_an_in_process_backend_fails_at_once() -> None:
    async with LocalBackend(isolation="none") as backend:
        client = hopx_sync.Hopx(api_key=backend.api_key, base_url=backend.base_url)
        try:
            with pytest.raises(RuntimeError) as caught:
                client.sandboxes.list_templates()
        finally:
            await asyncio.to_thread(client.close)  # a blocking call: not from this thread
        message = str(caught.value)
        loop = asyncio.get_running_loop()
        assert f"event loop {type(loop).__name__}@{id(loop):#x}" in message
        assert f"the LocalBackend at {backend.base_url}" in message
        assert "hopx_async" in message and "LocalBackend.in_thread()" in message


@pytest.mark.anyio
async def test_with_the_backend_in_a_thread_sync_calls_work_from_async_code() -> None:
    with LocalBackend.in_thread(isolation="none") as backend:
        client = hopx_sync.Hopx(api_key=backend.api_key, base_url=backend.base_url)
        with client:
            names = [t.name for t in client.sandboxes.list_templates()]
    assert "code-interpreter" in names


@pytest.mark.anyio
async def test_a_stopped_backend_no_longer_blocks_sync_calls(backend: LocalBackend) -> None:
    async with LocalBackend(isolation="none"):
        pass
    with hopx_sync.Hopx(api_key=backend.api_key, base_url=backend.base_url) as client:
        assert re.match("code-interpreter", client.sandboxes.list_templates()[0].name)


def test_handles_of_another_client_are_named_with_their_client(
    backend: LocalBackend, client: hopx_sync.Hopx, sandbox: hopx_sync.Sandbox
) -> None:
    proc = sandbox.run_code_background("print(1)")
    with hopx_sync.Hopx(api_key=backend.api_key, base_url=backend.base_url) as other:
        for call, named in (
            (lambda: other.wait_all([proc], timeout=30), f"process {proc.id}"),
            (lambda: list(other.as_completed([proc], timeout=30)), f"process {proc.id}"),
            (
                lambda: other.run_many([hopx_sync.Task(code="1")], sandboxes=[sandbox]),
                f"sandbox {sandbox.id} belong",
            ),
        ):
            with pytest.raises(RuntimeError) as caught:
                call()
            message = str(caught.value)
            assert named in message, message
            assert f"(created at {other.origin})" in message, message
            assert f"belong to the client created at {client.origin}" in message
            assert f"sandbox {sandbox.id}" in message
            assert "client.sandboxes.connect(SANDBOX_ID)" in message
        own = other.sandboxes.connect(sandbox.id).process(proc.id)
        assert [r.stdout for r in other.wait_all([own], timeout=30)] == ["1\n"]
    assert re.search(r"conftest\.py:\d+$", client.origin), client.origin
