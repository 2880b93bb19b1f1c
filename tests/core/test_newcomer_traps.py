"""What a newcomer reaches for first: a sandbox without naming a template, and a lifetime
past the documented 7-day maximum refused before any request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hopx_sync
from hopx_async import AsyncHopx, AsyncSandbox, ValidationError
from hopx_async._validation import MAX_PROCESS_TIMEOUT
from hopx_async.local import LocalBackend

from .test_validation_limits import offline_sandbox


@pytest.mark.anyio
async def test_create_without_a_template_makes_a_code_interpreter(client: AsyncHopx) -> None:
    async with client.sandboxes.create() as sandbox:
        assert (await sandbox.get_info()).template_name == "code-interpreter"
    async with AsyncSandbox.create(client=client) as sandbox:
        assert (await sandbox.get_info()).template_name == "code-interpreter"
        result = await sandbox.run_code("print(6 * 7)")
        assert result.stdout == "42\n"
    async with client.sandboxes.create("base") as sandbox:  # a name given still counts
        assert (await sandbox.get_info()).template_name == "base"


def test_sync_sandbox_create_needs_no_arguments(backend: LocalBackend) -> None:
    with (
        hopx_sync.Hopx(api_key=backend.api_key, base_url=backend.base_url) as client,
        hopx_sync.Sandbox.create(client=client) as sandbox,
    ):
        assert sandbox.get_info().template_name == "code-interpreter"


@pytest.mark.anyio
async def test_a_lifetime_past_seven_days_is_refused_before_any_request(proxy: Any) -> None:
    sandbox = offline_sandbox(proxy.url)
    with pytest.raises(ValidationError) as err:
        await sandbox.run_code_background("x", timeout=10**9)
    assert err.value.argument == "timeout"
    assert f"at most {MAX_PROCESS_TIMEOUT}" in str(err.value)
    with pytest.raises(ValidationError, match="timeout"):
        await sandbox.run_code_async(
            "x", callback_url="http://127.0.0.1:1/hook", timeout=MAX_PROCESS_TIMEOUT + 1
        )
    assert not proxy.counts, "no request may be sent"


@pytest.mark.anyio
async def test_seven_days_exactly_is_accepted(sandbox: AsyncSandbox) -> None:
    proc = await sandbox.run_code_background("print('ok')", timeout=MAX_PROCESS_TIMEOUT)
    assert (await proc.wait(timeout=30)).stdout == "ok\n"


@pytest.mark.anyio
async def test_the_local_run_code_keeps_no_state_as_the_docs_say(sandbox: AsyncSandbox) -> None:
    await sandbox.run_code("import json\nx = 1")
    result = await sandbox.run_code("print(x)")
    assert not result.success and "NameError" in result.stderr  # a fresh interpreter per call
    root = Path(__file__).resolve().parents[2]
    for page in (root / "README.md", root / "docs" / "guides" / "local.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert "fresh interpreter of the host's Python" in text, page
        assert "host's installed packages" in text, page
        assert "no rich results" in text, page
        assert "The service's code interpreter is a kernel in the sandbox" in text, page
