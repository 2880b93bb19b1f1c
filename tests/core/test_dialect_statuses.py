"""Unknown statuses end a wait when the record carries an end marker (issue 16, item 14;
docs/wire.md 13.4 X6).

The ``status_aliases`` knob of the strict dialects is not merged yet: the fault proxy
reports ``failed`` as ``error`` in every process record it forwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from hopx_async import AsyncHopx, ProcessInfo

from .proxy import FaultProxy

pytestmark = pytest.mark.anyio


def failed_as_error(key: str, status: int, data: Any) -> tuple[int, Any]:
    if isinstance(data, dict):
        for record in [data, *(data.get("processes") or [])]:
            if isinstance(record, dict) and record.get("status") == "failed":
                record["status"] = "error"
    return status, data


async def test_an_unknown_status_with_an_exit_code_ends_the_wait(
    proxied: AsyncHopx, proxy: FaultProxy
) -> None:
    proxy.rewrite_answer = failed_as_error
    async with proxied.sandboxes.create("base") as sbx:
        proc = await sbx.run_code_background("import sys; sys.exit(3)")
        result = await proc.wait(timeout=10)
        assert (result.status, result.exit_code) == ("error", 3)
        assert proc.done


def test_is_done_by_end_marker() -> None:
    def info(**fields: Any) -> ProcessInfo:
        return ProcessInfo.from_wire({"process_id": "p", **fields})

    assert info(status="error", exit_code=1).is_done
    assert info(status="error", end_time="2026-12-02T17:08:05.123456789Z").is_done
    assert not info(status="error").is_done, "no end marker: not known to have ended"
    assert not info(status="running", exit_code=0).is_done
