"""Wire variants the SDK must read (docs/wire.md, section 6, rule 1), end to end."""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


async def test_kill_falls_back_to_the_older_path_and_remembers(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    async with proxied.sandboxes.create("base") as sbx:
        a = await sbx.run_code_background("import time; time.sleep(30)")
        b = await sbx.run_code_background("import time; time.sleep(30)")
        # an agent without the documented DELETE form: a bare 405, no error code
        proxy.inject(Fault("DELETE", r"/execute/kill$", 405, text="Method Not Allowed", times=9))
        assert await a.kill()
        assert await b.kill()
        assert proxy.count("DELETE", "/execute/kill") == 1, "the failed form is tried once"
        assert proxy.count("POST", "/execute/kill/{proc}") == 2
        assert {(await p.wait(timeout=10)).status for p in (a, b)} == {"killed"}


async def test_kill_last_resort_path(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    async with proxied.sandboxes.create("base") as sbx:
        proc = await sbx.run_code_background("import time; time.sleep(30)")
        proxy.inject(Fault("DELETE", r"/execute/kill$", 404, text="404: Not Found"))
        proxy.inject(Fault("POST", r"/execute/kill/", 404, text="404: Not Found"))
        assert await proc.kill()
        assert proxy.count("POST", "/processes/{proc}/kill") == 1
        assert (await proc.wait(timeout=10)).status == "killed"


async def test_background_start_answered_with_text(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    """Older agents answered a background command with "Background process started: <id>"."""
    async with proxied.sandboxes.create("base") as sbx:
        proxy.inject(
            Fault(
                "POST",
                r"/commands/background$",
                200,
                text="Background process started: {upstream}",
                after=True,
            )
        )
        proc = await sbx.commands.run("echo parsed", background=True)
        assert proc.id.startswith("proc_")
        assert (await proc.wait(timeout=10)).stdout == "parsed\n"


async def test_generated_model_names_and_unknown_status_in_a_list(
    backend: Any, proxy: FaultProxy
) -> None:
    body = {
        "processes": [
            {
                "process_id": "proc_x",
                "status": "paused-by-operator",
                "start_time": "2026-01-01T00:00:00Z",
                "end_time": None,
                "duration": 0.5,
                "pid": 7,
                "new_field": {"nested": True},
            }
        ],
        "count": 1,
    }
    async with (
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sbx,
    ):
        proxy.inject(Fault("GET", r"/execute/processes$", 200, body))
        [info] = await sbx.list_processes()
    assert info.status == "paused-by-operator"
    assert info.started_at is not None and info.started_at.year == 2026
    assert info.execution_time == 0.5
    assert info.pid == 7


async def test_nested_error_body_from_a_server(backend: Any, proxy: FaultProxy) -> None:
    from hopx_async import PaymentRequiredError

    nested = {"error": {"message": "out of credit", "code": "PAYMENT_REQUIRED", "request_id": "r9"}}
    proxy.inject(Fault("POST", r"/v1/sandboxes$", 402, nested))
    async with AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client:
        with pytest.raises(PaymentRequiredError) as err:
            await client.sandboxes.create("base")
    assert (err.value.code, err.value.request_id, err.value.message) == (
        "PAYMENT_REQUIRED",
        "r9",
        "out of credit",
    )
