"""200 concurrent background processes over 20 sandboxes, all to completion."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

SANDBOXES = 20
PER_SANDBOX = 10


async def drain(api: Api, sbx: Sandbox, expected: int) -> dict[str, dict[str, object]]:
    """Follow one sandbox with the since/wait long-poll until every process ended."""
    terminal = {"completed", "failed", "killed", "timeout"}
    seen: dict[str, dict[str, object]] = {}
    version = 0
    while len(seen) < expected or any(p["status"] not in terminal for p in seen.values()):
        answer = await api.agent(
            sbx, "GET", f"/execute/processes?since={version}&wait=10&output=false"
        )
        assert answer.status == 200, answer.body
        version = answer.body["version"]
        for proc in answer.body["processes"]:
            seen[proc["process_id"]] = proc
    return seen


async def test_200_processes_over_20_sandboxes(api: Api) -> None:
    sandboxes = await asyncio.gather(*[api.create() for _ in range(SANDBOXES)])
    try:
        code = (
            "import sys, time; time.sleep(0.5)\n"
            "print('out', {s}, {n}); print('err', {n}, file=sys.stderr)"
        )
        starts = await asyncio.gather(
            *[
                api.background(sbx, code.format(s=s, n=n), name=f"job-{s}-{n}")
                for s, sbx in enumerate(sandboxes)
                for n in range(PER_SANDBOX)
            ]
        )
        assert len({s["process_id"] for s in starts}) == SANDBOXES * PER_SANDBOX
        finals = await asyncio.gather(*[drain(api, sbx, PER_SANDBOX) for sbx in sandboxes])
        for s, (sbx, final) in enumerate(zip(sandboxes, finals, strict=True)):
            assert len(final) == PER_SANDBOX
            listed = await api.agent(sbx, "GET", "/execute/processes")
            assert listed.body["count"] == PER_SANDBOX
            for proc in listed.body["processes"]:
                n = int(proc["name"].rsplit("-", 1)[1])
                assert proc["name"] == f"job-{s}-{n}"
                assert proc["status"] == "completed", proc
                assert proc["exit_code"] == 0
                assert proc["stdout"] == f"out {s} {n}\n"
                assert proc["stderr"] == f"err {n}\n"
    finally:
        await asyncio.gather(*[api.cp("DELETE", f"/v1/sandboxes/{s.id}") for s in sandboxes])
