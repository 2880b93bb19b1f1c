"""One server per state directory: a second ``serve`` on a state dir in use (also with an
explicit ``--port``) refuses and touches nothing; two ``hopx local start`` at once give one
server, which ``hopx local stop`` stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.state.lock import StateDirInUse

from .helpers import Api, eventually, marker, pids_with_arg
from .test_crash import ISOLATION, KEY, free_port, serve

pytestmark = pytest.mark.anyio

HOPX = Path(sys.executable).parent / "hopx"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    if ISOLATION:
        env["HOPX_LOCAL_ISOLATION"] = ISOLATION
    return env


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_second_serve_with_explicit_port_refuses(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    state, log = tmp_path / "state", tmp_path / "server.log"
    first, base_url = serve(state, free_port(), log)
    servers.append(first)
    async with aiohttp.ClientSession() as session:
        api = Api(session, base_url, KEY)
        sbx = await api.create()
        arg = marker()
        running = await api.command(sbx, f"sleep 60 {arg}")
        assert await eventually(lambda: bool(pids_with_arg(arg)))
        before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}

        argv = [sys.executable, "-m", "hopx_async.local", "serve", "--state-dir", str(state)]
        argv += ["--port", str(free_port()), "--log-level", "WARNING"]
        second = subprocess.run(
            argv, env={**_env(), "HOPX_API_KEY": KEY}, capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0
        assert "in use by another server" in second.stderr, second.stderr
        assert f"pid {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == ""

        # the first server and its process are untouched
        assert first.poll() is None
        assert pids_with_arg(arg), "the running process was not killed"
        process = await api.process(sbx, running["process_id"])
        assert process["status"] == "running", process
        assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before
        listed = await api.cp("GET", "/v1/sandboxes")
        assert sbx.id in {s["id"] for s in listed.body["data"]}


def test_backend_in_process_refuses_a_held_state_dir(tmp_path: Path) -> None:
    refused = pytest.raises(StateDirInUse, match="in use by another server")
    with LocalBackend.in_thread(state_dir=tmp_path), refused, LocalBackend.in_thread(tmp_path):
        pass
    with LocalBackend.in_thread(state_dir=tmp_path):  # released at stop
        pass


def _servers_on(state: Path) -> list[int]:
    return [pid for pid in pids_with_arg(str(state)) if b"serve" in _argv(pid)]


def _argv(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("run", range(3))
def test_concurrent_starts_give_one_server_that_stop_stops(tmp_path: Path, run: int) -> None:
    state = tmp_path / f"state{run}"
    command = [str(HOPX), "local", "start", "--state-dir", str(state)]
    starts = [
        subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=90) for proc in starts]
    try:
        for proc, (_, err) in zip(starts, outs, strict=True):
            assert proc.returncode == 0, err.decode()
        assert outs[0][0] == outs[1][0], "both print the same server's URL and key"
        said = sorted(err.decode().split(" at ")[0] for _, err in outs)
        assert said == ["local backend already running", "local backend started"], said
        alive = _servers_on(state)
        record = json.loads((state / "server.json").read_text())
        assert alive == [record["pid"]], (alive, record)
    finally:
        stop = subprocess.run(
            [str(HOPX), "local", "stop", "--state-dir", str(state)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0
    assert "stopped the local backend" in stop.stderr, stop.stderr
    assert not _servers_on(state)
