"""The extensions advertised in /health features (absent from the real service)."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import time

import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


async def test_list_without_output_and_since(api: Api, sbx: Sandbox) -> None:
    first = await api.background(sbx, "print('one')")
    await api.wait_done(sbx, first["process_id"])
    full = await api.agent(sbx, "GET", "/execute/processes")
    version = full.body["version"]
    assert isinstance(version, int)
    assert full.body["processes"][0]["stdout"] == "one\n"
    bare = await api.agent(sbx, "GET", "/execute/processes?output=false")
    (proc,) = bare.body["processes"]
    for key in ("stdout", "stderr", "stdout_truncated", "stderr_truncated"):
        assert key not in proc
    assert proc["status"] == "completed"
    assert proc["version"] <= version
    nothing = await api.agent(sbx, "GET", f"/execute/processes?since={version}")
    assert nothing.body == {"processes": [], "count": 0, "version": version}
    second = await api.background(sbx, "print('two')")
    changed = await api.agent(sbx, "GET", f"/execute/processes?since={version}&output=false")
    assert [p["process_id"] for p in changed.body["processes"]] == [second["process_id"]]
    assert changed.body["version"] > version
    assert changed.body["processes"][0]["version"] > version
    # queued, running and the terminal state are three changes.
    done = await api.wait_done(sbx, second["process_id"])
    assert done["version"] >= version + 3


async def test_long_poll_wakes_on_change_and_times_out(api: Api, sbx: Sandbox) -> None:
    version = (await api.agent(sbx, "GET", "/execute/processes")).body["version"]
    t0 = time.monotonic()
    idle = await api.agent(sbx, "GET", f"/execute/processes?since={version}&wait=0.5")
    assert 0.45 < time.monotonic() - t0 < 2
    assert idle.body["processes"] == []

    async def start_later() -> None:
        await asyncio.sleep(0.3)
        await api.background(sbx, "pass")

    t0 = time.monotonic()
    poll, _ = await asyncio.gather(
        api.agent(sbx, "GET", f"/execute/processes?since={version}&wait=10"), start_later()
    )
    assert time.monotonic() - t0 < 3
    assert poll.body["count"] >= 1
    assert poll.body["version"] > version


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=-1", "since"),
        ("since=x", "since"),
        ("since=0&wait=0", "wait"),
        ("since=0&wait=31", "wait"),
        ("since=0&wait=abc", "wait"),
        ("output=maybe", "output"),
    ],
)
async def test_list_bad_parameters(api: Api, sbx: Sandbox, query: str, param: str) -> None:
    answer = await api.agent(sbx, "GET", f"/execute/processes?{query}")
    assert param in answer.expect_error(400, "INVALID_REQUEST")["error"]


async def test_get_one_process(api: Api, sbx: Sandbox) -> None:
    started = await api.background(sbx, "import time; time.sleep(0.4); print('x')")
    one = await api.process(sbx, started["process_id"])
    assert one["process_id"] == started["process_id"]
    assert one["status"] == "running"
    t0 = time.monotonic()
    waited = await api.process(sbx, started["process_id"], "?wait=10")
    assert time.monotonic() - t0 < 3
    assert waited["status"] == "completed"
    assert waited["stdout"] == "x\n"
    missing = await api.agent(sbx, "GET", "/execute/processes/proc_nope")
    missing.expect_error(404, "PROCESS_NOT_FOUND")
    for query, param in [
        ("stdout_offset=-1", "stdout_offset"),
        ("stderr_offset=x", "stderr_offset"),
        ("stdout_offset=0&max_bytes=0", "max_bytes"),
        ("stdout_offset=0&max_bytes=8388609", "max_bytes"),
        ("wait=0", "wait"),
    ]:
        bad = await api.agent(sbx, "GET", f"/execute/processes/{started['process_id']}?{query}")
        assert param in bad.expect_error(400, "INVALID_REQUEST")["error"]


async def test_offsets_and_wait_for_new_bytes(api: Api, sbx: Sandbox) -> None:
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "time.sleep(0.5)\n"
        "print('second', flush=True)\n"
        "print('err', file=sys.stderr)\n"
    )
    started = await api.background(sbx, code)
    pid = started["process_id"]
    head = await api.process(sbx, pid, "?stdout_offset=0&wait=5")
    assert head["stdout"] == "first\n"
    assert head["stdout_next_offset"] == 6
    assert head["stdout_size"] == 6
    assert head["stderr"] == ""
    assert head["stderr_next_offset"] == 0
    t0 = time.monotonic()
    more = await api.process(sbx, pid, "?stdout_offset=6&stderr_offset=0&wait=5")
    assert 0.2 < time.monotonic() - t0 < 3
    assert more["stdout"].startswith("second")
    await api.wait_done(sbx, pid)
    tail = await api.process(sbx, pid, "?stdout_offset=6&stderr_offset=0")
    assert tail["stdout"] == "second\n"
    assert tail["stdout_next_offset"] == tail["stdout_size"] == 13
    assert tail["stderr"] == "err\n"
    past = await api.process(sbx, pid, "?stdout_offset=100")
    assert past["stdout"] == ""
    assert past["stdout_next_offset"] == 100
    assert past["stderr"] == "err\n"  # a missing offset counts from 0
    small = await api.process(sbx, pid, "?stdout_offset=0&max_bytes=3")
    assert small["stdout"] == "fir"
    assert small["stdout_next_offset"] == 3


async def test_offsets_never_split_utf8(api: Api, sbx: Sandbox) -> None:
    started = await api.background(
        sbx, "import sys; sys.stdout.write('a' + '\u00e9' * 4); sys.stdout.flush()"
    )
    await api.wait_done(sbx, started["process_id"])
    # 'a' is 1 byte, each 'é' 2 bytes: a cut at 4 bytes falls inside the second 'é'.
    part = await api.process(sbx, started["process_id"], "?stdout_offset=0&max_bytes=4")
    assert part["stdout"] == "a\u00e9"
    assert part["stdout_next_offset"] == 3
    rest = await api.process(sbx, started["process_id"], "?stdout_offset=3")
    assert rest["stdout"] == "\u00e9" * 3
    assert rest["stdout_size"] == 9


async def test_big_output_kept_byte_for_byte_and_capped_in_lists(api: Api, sbx: Sandbox) -> None:
    size = 64 * MIB
    code = (
        "import sys\n"
        "pattern = b'%07d-0123456789abcdefghijklmnopqrstuvwxyz\\n'\n"
        "line = b''.join(pattern % i for i in range(1024))\n"
        f"for _ in range({size} // len(line)):\n"
        "    sys.stdout.buffer.write(line)\n"
        "sys.stderr.write('tail')\n"
    )
    started = await api.background(sbx, code)
    pid = started["process_id"]
    await api.wait_done(sbx, pid, seconds=60)
    listed = await api.agent(sbx, "GET", "/execute/processes")
    (proc,) = [p for p in listed.body["processes"] if p["process_id"] == pid]
    assert proc["stdout_truncated"] is True
    assert len(proc["stdout"].encode()) == MIB
    assert proc["stderr"] == "tail"
    assert proc["stderr_truncated"] is False
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = await api.process(sbx, pid, f"?stdout_offset={offset}&max_bytes={8 * MIB}")
        data = chunk["stdout"].encode()
        if not data:
            break
        digest.update(data)
        offset = chunk["stdout_next_offset"]
    assert offset == chunk["stdout_size"]
    line = b"".join(b"%07d-0123456789abcdefghijklmnopqrstuvwxyz\n" % i for i in range(1024))
    expected = hashlib.sha256(line * (size // len(line))).hexdigest()
    assert offset == len(line) * (size // len(line))
    assert digest.hexdigest() == expected


async def test_delete_process(api: Api, sbx: Sandbox, backend: LocalBackend) -> None:
    running = await api.command(sbx, "sleep 30")
    conflict = await api.agent(sbx, "DELETE", f"/execute/processes/{running['process_id']}")
    conflict.expect_error(409, "CONFLICT")
    await api.agent(sbx, "POST", f"/execute/kill/{running['process_id']}")
    finished = await api.background(sbx, "print('bye')")
    await api.wait_done(sbx, finished["process_id"])
    assert backend.state_dir is not None
    sandbox_dir = str(backend.state_dir / "sandboxes" / sbx.id)
    outputs = glob.glob(os.path.join(sandbox_dir, "output", f"{finished['process_id']}.*"))
    assert outputs
    for proc in (running, finished):
        answer = await api.agent(sbx, "DELETE", f"/execute/processes/{proc['process_id']}")
        assert answer.status == 200
        assert answer.body == {"process_id": proc["process_id"], "status": "deleted"}
    assert not glob.glob(os.path.join(sandbox_dir, "output", f"{finished['process_id']}.*"))
    listed = await api.agent(sbx, "GET", "/execute/processes")
    assert listed.body["processes"] == []
    again = await api.agent(sbx, "DELETE", f"/execute/processes/{finished['process_id']}")
    again.expect_error(404, "PROCESS_NOT_FOUND")


async def test_idempotency_key(api: Api, sbx: Sandbox) -> None:
    headers = {"Idempotency-Key": "start-once"}
    answers = await asyncio.gather(
        *[
            api.agent(
                sbx, "POST", "/execute/background", json={"code": "print(1)"}, headers=headers
            )
            for _ in range(3)
        ]
    )
    ids = {a.body["process_id"] for a in answers}
    assert len(ids) == 1
    later = await api.agent(
        sbx, "POST", "/execute/background", json={"code": "print(1)"}, headers=headers
    )
    assert later.body == answers[0].body
    other = await api.agent(
        sbx,
        "POST",
        "/commands/background",
        json={"command": "true"},
        headers={"Idempotency-Key": "another"},
    )
    assert other.body["process_id"] not in ids
    listed = await api.agent(sbx, "GET", "/execute/processes?output=false")
    assert listed.body["count"] == 2
