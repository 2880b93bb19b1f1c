"""`python -m hopx_async.local serve` as a real subprocess: restarts, SIGKILL, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import attrs
import pytest

from .helpers import PY, Api, Sandbox, eventually, marker, pids_with_arg

pytestmark = pytest.mark.anyio


@attrs.define
class Server:
    proc: subprocess.Popen[str]
    base_url: str
    api_key: str
    log: Path

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)

    def rest_of_stdout(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


def serve(*args: str, log: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    with open(log, "a") as err:
        proc = subprocess.Popen(
            [PY, "-m", "hopx_async.local", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    first = proc.stdout.readline().rstrip("\n")
    second = proc.stdout.readline().rstrip("\n")
    assert re.fullmatch(r"HOPX_BASE_URL=http://127\.0\.0\.1:\d+", first), (first, log.read_text())
    assert second.startswith("HOPX_API_KEY=")
    return Server(proc, first.split("=", 1)[1], second.split("=", 1)[1], log)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        if server.proc.stdout is not None:
            server.proc.stdout.close()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def test_restart_after_sigkill_and_sigterm(tmp_path: Path, servers: list[Server]) -> None:
    state = tmp_path / "state"
    log = tmp_path / "server.log"
    args = ("--state-dir", str(state), "--api-key", "test-key-123")
    first = serve(*args, log=log)
    servers.append(first)
    assert first.api_key == "test-key-123"
    async with aiohttp.ClientSession() as session:
        api = Api(session, first.base_url, first.api_key)
        sbx = await api.create(env_vars={"KEPT": "yes"})
        quick = await api.background(sbx, "import os; print('done', os.environ['KEPT'])")
        await api.wait_done(sbx, quick["process_id"])
        health = await api.raw("GET", first.base_url + "/health")
        boxed = health.body["isolation"] == "bubblewrap"
        slow_arg = marker()
        slow = await api.command(sbx, f"sleep 60 {slow_arg}")
        assert await eventually(lambda: bool(pids_with_arg(slow_arg)))
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        if boxed:  # --die-with-parent: the box ended with the server
            assert await eventually(lambda: not pids_with_arg(slow_arg))
        else:  # its own session: it outlived the server
            assert pids_with_arg(slow_arg)

    second = serve(*args, log=log)
    servers.append(second)
    async with aiohttp.ClientSession() as session:
        api = Api(session, second.base_url, second.api_key)
        got = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
        assert got.status == 200
        moved = Sandbox(got.body)  # same token secret, new port
        assert (
            await api.agent(Sandbox({**moved.data, "auth_token": sbx.token}), "GET", "/health")
        ).status == 200
        listed = await api.agent(moved, "GET", "/execute/processes")
        by_id = {p["process_id"]: p for p in listed.body["processes"]}
        assert by_id[quick["process_id"]]["status"] == "completed"
        assert by_id[quick["process_id"]]["stdout"] == "done yes\n"
        lost = by_id[slow["process_id"]]
        assert lost["status"] == "failed"
        assert "stopped" in lost["error"]
        assert "stopped" in lost["stderr"]
        assert lost["completed_at"] is not None
        assert lost["execution_time"] < 30
        assert pids_with_arg(slow_arg) == []  # an orphaned group was ended at restart
        version = listed.body["version"]
        assert lost["version"] <= version

        running = await api.command(moved, "sleep 60")
        running_pid = (await api.process(moved, running["process_id"]))["pid"]
        assert second.stop(signal.SIGTERM) == 0
        assert second.rest_of_stdout() == ""  # nothing but the two lines on stdout
        assert not pid_alive(running_pid)

    third = serve(*args, log=log)
    servers.append(third)
    async with aiohttp.ClientSession() as session:
        api = Api(session, third.base_url, third.api_key)
        moved = Sandbox((await api.cp("GET", f"/v1/sandboxes/{sbx.id}")).body)
        after = await api.process(moved, running["process_id"])
        assert after["status"] == "killed"
        newer = await api.agent(moved, "GET", f"/execute/processes?since={version}")
        assert running["process_id"] in {p["process_id"] for p in newer.body["processes"]}
        assert quick["process_id"] not in {p["process_id"] for p in newer.body["processes"]}
    assert third.stop(signal.SIGINT) == 0
    assert "test-key-123" not in log.read_text()
    assert sbx.token not in log.read_text()


async def test_temporary_state_is_removed_and_non_loopback_warns(
    tmp_path: Path, servers: list[Server]
) -> None:
    log = tmp_path / "server.log"
    server = serve("--host", "0.0.0.0", log=log)
    servers.append(server)
    text = log.read_text()
    assert "not loopback" in text
    match = re.search(r"state in (\S+)\)", text)
    assert match
    state_dir = Path(match.group(1))
    assert state_dir.is_dir()
    assert server.stop(signal.SIGTERM) == 0
    deadline = time.monotonic() + 2
    while state_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state_dir.exists()
    assert server.api_key.startswith("hopx_local_")
