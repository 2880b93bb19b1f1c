"""Kill forms against servers that read the id elsewhere (issue 16, item 1; docs/wire.md 13.3 A6).

The strict dialects are not merged yet: the fault proxy refuses a request form the way the
``openapi`` and ``hopx`` dialects would (a 400 for an id missing from the query, a plain 404
for an undocumented route).
"""

from __future__ import annotations

import pytest

from hopx_async import AsyncHopx, ProcessNotFoundError

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio

REQUIRED = {"error": "'process_id' is required", "code": "INVALID_REQUEST"}


async def test_kill_sends_the_id_in_the_query_as_the_openapi_reads_it(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    """``openapi``: the body is ignored, an id only there is 400; ``POST`` forms are 404."""
    async with proxied.sandboxes.create("base") as sbx:
        proc = await sbx.run_code_background("import time; time.sleep(30)")
        proxy.inject(
            Fault(
                "DELETE",
                r"/execute/kill$",
                400,
                body=REQUIRED,
                times=9,
                when=lambda r: "process_id" not in r.query,
            )
        )
        proxy.inject(Fault("POST", r"/kill", 404, text="404 page not found", times=9))
        assert await proc.kill()
        assert proxy.bodies["DELETE /execute/kill"] == [{"process_id": proc.id}]
        assert (await proc.wait(timeout=10)).status == "killed"


async def test_kill_falls_back_on_a_400_and_remembers_per_sandbox(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    """A server whose ``DELETE`` reads the id nowhere the SDK puts it: the official SDK's
    ``POST /execute/kill/{id}`` next, and only it afterwards."""
    async with proxied.sandboxes.create("base") as sbx:
        a = await sbx.run_code_background("import time; time.sleep(30)")
        b = await sbx.run_code_background("import time; time.sleep(30)")
        proxy.inject(Fault("DELETE", r"/execute/kill$", 400, body=REQUIRED, times=9))
        assert await a.kill()
        await sbx.kill_process(b.id)
        assert proxy.count("DELETE", "/execute/kill") == 1
        assert proxy.count("POST", "/execute/kill/{proc}") == 2


async def test_a_process_404_is_not_a_reason_to_fall_back(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    async with proxied.sandboxes.create("base") as sbx:
        for code in ("RESOURCE_NOT_FOUND", "PROCESS_NOT_FOUND"):
            proxy.inject(
                Fault("DELETE", r"/execute/kill$", 404, body={"error": "gone", "code": code})
            )
            with pytest.raises(ProcessNotFoundError):
                await sbx.kill_process("proc_unknown")
        assert proxy.count("POST", "/execute/kill/{proc}") == 0
        assert proxy.count("POST", "/processes/{proc}/kill") == 0


async def test_a_route_miss_coded_not_found_falls_back(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    async with proxied.sandboxes.create("base") as sbx:
        proc = await sbx.run_code_background("import time; time.sleep(30)")
        proxy.inject(
            Fault("DELETE", r"/execute/kill$", 404, body={"error": "no route", "code": "NOT_FOUND"})
        )
        assert await proc.kill()
        assert proxy.count("POST", "/execute/kill/{proc}") == 1
