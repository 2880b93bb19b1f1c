"""Limits of a sandbox: a memory hog and a fork flood are stopped, and nobody else suffers.

The attacks run in sandbox A of a server whose sandboxes get 96 MiB and 64 processes (the
``HOPX_LOCAL_SANDBOX_MEMORY_MB`` / ``HOPX_LOCAL_MAX_PROCESSES`` switches; the template's own
2 GiB would make the test slow). Meanwhile the server's ``/health`` and a neighbour sandbox's
``run_code`` are timed; the figures are printed, not asserted (the machine is shared). The
cgroup tests skip where the machine gives no usable cgroups; the rlimit fallback (cgroups
turned off with ``HOPX_LOCAL_CGROUPS=off``) is tested wherever there is a box.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

#: Read at import, before the suite's fixtures clear the HOPX_* variables of each test.
FORCED_OFF = os.environ.get("HOPX_LOCAL_ISOLATION", "").strip().lower() == "none"
MEMORY_MB, PROCESSES = 96, 64

HOG = """
import time
hold = []
while True:
    hold.append(bytearray(4 << 20))
    print(len(hold) * 4, flush=True)
    time.sleep(0.01)
"""

FLOOD = """
import os, time
made, refused, end = 0, 0, time.monotonic() + {seconds}
while time.monotonic() < end:
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
    except OSError:
        refused += 1
        time.sleep(0.001)
print(made, refused)
"""


async def _limited(monkeypatch: pytest.MonkeyPatch, **env: str) -> AsyncIterator[Api]:
    monkeypatch.setenv("HOPX_LOCAL_SANDBOX_MEMORY_MB", str(MEMORY_MB))
    monkeypatch.setenv("HOPX_LOCAL_MAX_PROCESSES", str(PROCESSES))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    isolation: Any = "none" if FORCED_OFF else "auto"
    async with LocalBackend(isolation=isolation) as backend, aiohttp.ClientSession() as session:
        if backend.isolation != "bubblewrap":
            pytest.skip("limits of a sandbox come with the bubblewrap box")
        yield Api(session, backend.base_url, backend.api_key)


@pytest.fixture
async def limited(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async for api in _limited(monkeypatch):
        yield api


@pytest.fixture
async def rlimited(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async for api in _limited(monkeypatch, HOPX_LOCAL_CGROUPS="off"):
        yield api


async def enforced(api: Api) -> dict[str, Any]:
    health = await api.raw("GET", api.base_url + "/health")
    return dict(health.body["sandbox_limits"])


async def need_cgroups(api: Api) -> None:
    if (await enforced(api))["memory_mb"]["by"] != "cgroup":
        pytest.skip("this machine gives the server no usable cgroups (memory and pids)")


async def neighbours(api: Api, other: Sandbox, done: asyncio.Event) -> dict[str, list[float]]:
    """Time /health and the other sandbox's run_code until ``done``."""
    health: list[float] = []
    runs: list[float] = []
    while not done.is_set():
        t0 = time.perf_counter()
        answer = await api.raw("GET", api.base_url + "/health")
        assert answer.status == 200
        health.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ran = await api.agent(other, "POST", "/execute", json={"code": "print(1)"})
        assert ran.status == 200 and ran.body["stdout"] == "1\n", ran.body
        runs.append(time.perf_counter() - t0)
    return {"health": health, "run_code": runs}


async def quiet(api: Api, other: Sandbox) -> dict[str, list[float]]:
    """The same timings with nothing else going on (five rounds)."""
    done = asyncio.Event()
    timing = asyncio.ensure_future(neighbours(api, other, done))
    await asyncio.sleep(0.3)
    done.set()
    return await timing


def figures(name: str, timed: dict[str, list[float]]) -> str:
    parts = []
    for what, samples in timed.items():
        if samples:
            worst = max(samples) * 1000
            parts.append(f"{what} n={len(samples)} p50 {statistics.median(samples) * 1000:.1f} "
                         f"ms max {worst:.1f} ms")  # fmt: skip
    return f"\n{name}: " + "; ".join(parts)


async def test_health_advertises_the_enforced_limits(limited: Api) -> None:
    limits = await enforced(limited)
    expected = {"memory_mb", "processes", "vcpu", "file_size_gb", "tmp_mb", "network"}
    assert set(limits) == expected | {"workspace_mb"}
    assert limits["memory_mb"]["value"] == MEMORY_MB
    assert limits["processes"]["value"] == PROCESSES
    assert limits["file_size_gb"] == {"value": 10, "by": "rlimit"}
    assert limits["tmp_mb"] == {"value": MEMORY_MB // 2, "by": "tmpfs"}


async def test_a_memory_hog_fails_with_oom(limited: Api) -> None:
    await need_cgroups(limited)
    hogger, other = await limited.create(), await limited.create()
    await limited.agent(other, "POST", "/execute", json={"code": "print(0)"})  # its box is up
    before = await quiet(limited, other)
    started = await limited.background(hogger, HOG, timeout=60)
    done = asyncio.Event()
    timing = asyncio.ensure_future(neighbours(limited, other, done))
    try:
        proc = await limited.wait_done(hogger, started["process_id"], seconds=40)
    finally:
        done.set()
        timed = await timing
    assert proc["status"] == "failed"
    assert proc["exit_code"] == 137
    assert "out-of-memory" in proc["error"] and f"{MEMORY_MB} MiB" in proc["error"]
    assert "out-of-memory" in proc["stderr"]
    reached = int(proc["stdout"].split()[-1])
    assert reached <= MEMORY_MB
    print(figures("before the hog", before))
    print(figures(f"memory hog ended at {reached} MiB of {MEMORY_MB}", timed))
    # The sandbox goes on: its next process runs.
    after = await limited.agent(hogger, "POST", "/execute", json={"code": "print(2)"})
    assert after.body["stdout"] == "2\n"


async def test_a_fork_flood_is_stopped(limited: Api) -> None:
    await need_cgroups(limited)
    flooder, other = await limited.create(), await limited.create()
    await limited.agent(other, "POST", "/execute", json={"code": "print(0)"})
    before = await quiet(limited, other)
    done = asyncio.Event()
    timing = asyncio.ensure_future(neighbours(limited, other, done))
    try:
        answer = await limited.agent(
            flooder, "POST", "/execute", json={"code": FLOOD.format(seconds=2), "timeout": 30}
        )
    finally:
        done.set()
        timed = await timing
    assert answer.status == 200, answer.body
    made, refused = (int(n) for n in answer.body["stdout"].split())
    assert made <= PROCESSES - 2  # the supervisor and the flood itself count too
    assert refused > 0
    print(figures("before the flood", before))
    print(figures(f"fork flood stopped at {made} processes ({refused} forks refused)", timed))
    killed = await limited.cp("POST", f"/v1/sandboxes/{flooder.id}/kill")
    assert killed.status == 200


async def test_rlimits_without_cgroups(rlimited: Api) -> None:
    limits = await enforced(rlimited)
    assert limits["memory_mb"]["by"] == "rlimit"
    sbx = await rlimited.create()
    code = (
        "import json, os, resource\n"
        "names = ('RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NPROC')\n"
        "seen = {n: resource.getrlimit(getattr(resource, n))[0] for n in names}\n"
        "seen['uid'] = os.getuid()\n"
        "try:\n"
        f"    bytearray({MEMORY_MB * 2} << 20)\n"
        "    seen['hog'] = 'allocated'\n"
        "except MemoryError:\n"
        "    seen['hog'] = 'MemoryError'\n"
        "print(json.dumps(seen))\n"
    )
    answer = await rlimited.agent(sbx, "POST", "/execute", json={"code": code})
    assert answer.body.get("stdout"), answer.body  # stderr and exit code if it did not run
    seen = json.loads(answer.body["stdout"])
    assert seen["RLIMIT_AS"] == MEMORY_MB << 20
    assert seen["RLIMIT_FSIZE"] == 10 << 30
    assert seen["hog"] == "MemoryError"
    if os.geteuid() == 0:  # per host uid: only set for a root server
        # The sandbox's own host uid (not 65534, shared with every other box on the
        # machine, whose processes would count against this limit and fail its box's start).
        assert seen["uid"] not in (0, 65534)
        assert seen["RLIMIT_NPROC"] == PROCESSES
        assert limits["processes"]["by"] == "rlimit"
