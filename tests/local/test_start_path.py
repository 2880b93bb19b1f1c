"""The start path: no thread per process (starts and exits go through one spawner process),
a lost spawner loses no record and leaves nothing running, and group commits that are still
durable before a start goes on.

The server tests run an in-process ``LocalBackend`` in the suite's isolation mode
(``HOPX_LOCAL_ISOLATION``), so the test sees the server's own threads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.runtime.spawner_client import SpawnArgs
from hopx_async.local.runtime.supervisor import Supervisor, exit_code_of
from hopx_async.local.state.records import SandboxRecord
from hopx_async.local.state.store import Store

from .helpers import Api, eventually, marker, pids_with_arg, processes

pytestmark = pytest.mark.anyio

ISOLATION: Any = os.environ.get("HOPX_LOCAL_ISOLATION", "").strip().lower() or "auto"
RUNNING = 200


def server_threads() -> list[str]:
    """The names of this process's threads, but the default executor's (which aiohttp's
    resolver and ``to_thread`` grow on demand, whatever the server does)."""
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def test_threads_stay_bounded_while_200_processes_run() -> None:
    async with (
        LocalBackend(isolation=ISOLATION) as backend,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as session,
    ):
        api = Api(session, backend.base_url, backend.api_key)
        before = server_threads()
        sbx = await api.create()
        arg = marker()

        async def start() -> dict[str, Any]:
            body = {"command": "sleep", "args": ["60", arg]}
            answer = await api.agent(sbx, "POST", "/commands/background", json=body)
            assert answer.status == 200, answer.body
            return dict(answer.body)

        first = await start()
        assert await eventually(lambda: len(pids_with_arg(arg)) == 1)
        with_one = server_threads()
        started = [first, *await asyncio.gather(*[start() for _ in range(RUNNING - 1)])]
        assert all(s["status"] == "running" for s in started), started
        assert await eventually(lambda: len(pids_with_arg(arg)) == RUNNING, seconds=60)
        with_all = server_threads()
        # No thread per process, and none for starting them: the same threads with 200
        # running as with one, as before anything ran.
        assert with_all == with_one == before
        listed = await api.agent(sbx, "GET", "/execute/processes?output=false")
        assert sum(p["status"] == "running" for p in listed.body["processes"]) == RUNNING

        # Ending them all is seen, process by process.
        for proc in started[:5]:
            answer = await api.agent(sbx, "POST", f"/processes/{proc['process_id']}/kill")
            assert answer.status == 200, answer.body
            assert (await api.process(sbx, proc["process_id"]))["status"] == "killed"
        assert await eventually(lambda: len(pids_with_arg(arg)) == RUNNING - 5)
        deleted = await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")
        assert deleted.status == 200, deleted.body
        assert await eventually(lambda: not pids_with_arg(arg), seconds=30)


async def test_exit_codes_and_timeouts_are_seen(api: Api) -> None:
    sbx = await api.create()
    try:
        arg = marker()
        cases = {
            "exit 0": ("completed", 0),
            "exit 3": ("failed", 3),
            "kill -9 $$": ("failed", 137),
            f"sleep 60 {arg} & sleep 60 {arg}; wait": ("timeout", None),
        }
        started = {
            cmd: await api.command(sbx, cmd, timeout=1 if "wait" in cmd else 30) for cmd in cases
        }
        for cmd, (status, code) in cases.items():
            done = await api.wait_done(sbx, started[cmd]["process_id"])
            assert done["status"] == status, (cmd, done)
            if code is not None:
                assert done["exit_code"] == code, (cmd, done)
        # The timeout ended the whole tree (the background sleep too), box or not.
        assert await eventually(lambda: not pids_with_arg(arg))
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")


async def test_supervisor_reports_exits_and_errors(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    supervisor = Supervisor(0.2)

    def args(script: str) -> SpawnArgs:
        return SpawnArgs(
            ["/bin/sh", "-c", script], tmp_path, {}, tmp_path / "out", tmp_path / "err"
        )

    try:
        runs = [
            await supervisor.spawn(args(script))
            for script in ("exit 0", "exit 7", "kill -TERM $$", "echo hi")
        ]
        codes = await asyncio.gather(*[supervisor.watch(run, 30) for run in runs])
        assert [exit_code_of(code) for code in codes] == [0, 7, 143, 0]
        assert (tmp_path / "out").read_text() == "hi\n"
        arg = marker()
        run = await supervisor.spawn(args(f"sleep 60 {arg} & sleep 60 {arg}; wait"))
        assert await eventually(lambda: len(pids_with_arg(arg)) == 2)
        await supervisor.watch(run, 0.2)
        assert run.end_reason == "timeout"
        assert run.child.returncode is not None
        assert await eventually(lambda: not pids_with_arg(arg))
        with pytest.raises(FileNotFoundError):
            await supervisor.spawn(
                SpawnArgs(["/nonexistent/program"], tmp_path, {}, tmp_path / "o", tmp_path / "e")
            )
        with pytest.raises(FileNotFoundError):
            await supervisor.spawn(
                SpawnArgs(
                    ["no-such-program-here"],
                    tmp_path,
                    {"PATH": "/bin"},
                    tmp_path / "o",
                    tmp_path / "e",
                )
            )
        with pytest.raises(FileNotFoundError):  # a missing working directory
            await supervisor.spawn(
                SpawnArgs(["/bin/true"], tmp_path / "absent", {}, tmp_path / "o", tmp_path / "e")
            )
        spawners = supervisor.spawner_pids()
        assert spawners
    finally:
        supervisor.close()
    # No thread was started, and the spawner process is gone once it is closed.
    assert set(threading.enumerate()) == threads_before
    assert not [pid for pid in spawners if os.path.exists(f"/proc/{pid}")]


async def test_group_commit_is_durable_for_every_waiter(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    store.bind_loop(asyncio.get_running_loop())
    try:

        def visible() -> set[str]:
            other = sqlite3.connect(tmp_path / "db.sqlite3")
            try:
                return {row[0] for row in other.execute("SELECT id FROM sandboxes")}
            finally:
                other.close()

        async def write_then_commit(name: str) -> set[str]:
            store.put_sandbox(
                SandboxRecord(
                    id=name,
                    seq=1,
                    template_name="base",
                    template_id="2",
                    region="local",
                    internet_access=False,
                    created_at=0.0,
                    updated_at=0.0,
                )
            )
            await store.commit()
            return visible()

        seen = await asyncio.gather(*[write_then_commit(f"sbx_{n}") for n in range(5)])
        # Each waiter goes on only once its own write (and the others' of the same
        # iteration) is committed: a second connection sees it.
        for n, names in enumerate(seen):
            assert f"sbx_{n}" in names
        assert visible() == {f"sbx_{n}" for n in range(5)}
    finally:
        store.close()


def spawner_pids() -> list[int]:
    """This process's spawner processes (the in-process servers')."""
    return [
        pid
        for pid, argv, fields in processes()
        if fields[1:2] == [str(os.getpid())]
        and any(a.endswith(b"/runtime/spawner.py") for a in argv)
    ]


async def test_a_lost_spawner_loses_no_record_and_leaves_nothing_running() -> None:
    others = set(spawner_pids())  # those of other servers in this process (the suite's)
    async with (
        LocalBackend(isolation=ISOLATION) as backend,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, backend.base_url, backend.api_key)
        # One spawner is up before the first start (which then waits for no interpreter).
        spawners = set(spawner_pids()) - others
        assert len(spawners) == 1, spawners
        sbx = await api.create()
        arg = marker()
        running = await api.command(sbx, f"sleep 60 {arg}")
        assert await eventually(lambda: len(pids_with_arg(arg)) == 1)
        assert set(spawner_pids()) - others == spawners
        for pid in spawners:
            os.kill(pid, signal.SIGKILL)
        # The running process is ended (nothing reports its exit any more), and its record
        # says so instead of staying "running" for ever.
        done = await api.wait_done(sbx, running["process_id"])
        assert done["status"] == "failed", done
        assert done["exit_code"] == 128 + signal.SIGKILL, done
        assert await eventually(lambda: not pids_with_arg(arg))
        # The next start gets a new spawner and runs as usual.
        again = await api.command(sbx, "echo again")
        finished = await api.wait_done(sbx, again["process_id"])
        assert finished["status"] == "completed", finished
        assert finished["stdout"] == "again\n"
        assert set(spawner_pids()).isdisjoint(spawners)
        await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")
