"""Crash-safe starts: a SIGKILL of the server mid-burst loses nothing and runs nothing twice.

300 concurrent background starts, each with its own idempotency key, each appending a unique
marker line to one file of the sandbox. The server (``python -m hopx_async.local serve`` in
a subprocess, fixed ``--port``, ``--state-dir``) is SIGKILLed once a third of the starts were
answered, and restarted on the same state dir and port; the client retries every start that
did not get an answer with the same key, as the SDK does, until all have one.

The isolation mode is the suite's (``HOPX_LOCAL_ISOLATION`` is passed to the server).
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import eventually, marker, pids_with_arg

pytestmark = pytest.mark.anyio

#: Read at import, before the suite's fixtures clear the HOPX_* variables of each test.
ISOLATION = os.environ.get("HOPX_LOCAL_ISOLATION", "")
STARTS = 300
KEY = "crash-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(state: Path, port: int, log: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env["HOPX_API_KEY"] = KEY
    if ISOLATION:
        env["HOPX_LOCAL_ISOLATION"] = ISOLATION
    argv = [sys.executable, "-m", "hopx_async.local", "serve", "--state-dir", str(state)]
    argv += ["--port", str(port), "--api-key", KEY, "--log-level", "WARNING"]
    with open(log, "a") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline().rstrip("\n")
    assert re.fullmatch(r"HOPX_BASE_URL=http://127\.0\.0\.1:\d+", first), log.read_text()
    proc.stdout.readline()
    return proc, first.split("=", 1)[1]


def start_of(pid: int) -> int | None:
    """The start number in a crash test's ``sleep`` argv (its last argument)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a for a in argv if a]
    return int(args[-1][-4:-1]) if args and args[-1].startswith(b"0.0000") else None


def tagged_with(sandbox_id: str) -> list[int]:
    """Host pids whose environment carries the box tag of ``sandbox_id``."""
    needle = f"HOPX_LOCAL_BOX={sandbox_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


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


async def test_sigkill_mid_burst_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    first, base_url = serve(state, port, log)
    servers.append(first)
    run_arg = marker()  # on every process's command line: finds them on the host
    answered: dict[int, dict[str, Any]] = {}
    retried: collections.Counter[int] = collections.Counter()
    half = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{base_url}/v1/sandboxes", json={"template_name": "base"}, headers={"X-API-Key": KEY}
        ) as resp:
            sandbox = await resp.json()
        host = sandbox["public_host"]
        auth = {"Authorization": f"Bearer {sandbox['auth_token']}"}

        async def start(i: int) -> None:
            # Relative: the working directory is the workspace, with or without a box.
            # The last sleep argument names the start (and adds less than a millisecond).
            tag = f"0.0000{i:03d}1"
            command = (
                f"echo m{i} >> markers.txt; sleep 2 {run_arg} {tag}; echo out{i}; echo err{i} >&2"
            )
            headers = {**auth, "Idempotency-Key": f"start-{i}"}
            deadline = time.monotonic() + 90
            while True:
                try:
                    async with session.post(
                        f"{host}/commands/background",
                        json={"command": command, "timeout": 60},
                        headers=headers,
                    ) as resp:
                        if resp.status == 200:
                            answered[i] = await resp.json()
                            if len(answered) >= STARTS // 3:
                                half.set()
                            return
                        assert resp.status >= 500 or resp.status == 429, await resp.text()
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                    pass
                retried[i] += 1
                assert time.monotonic() < deadline, f"start {i} never answered"
                await asyncio.sleep(0.05)

        burst = [asyncio.ensure_future(start(i)) for i in range(STARTS)]
        await half.wait()
        before_kill = set(pids_with_arg(run_arg))
        alive_at_kill = {start_of(pid) for pid in before_kill} - {None}
        boxes_at_kill = set(tagged_with(sandbox["id"]))
        answered_before = len(answered)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second, _ = serve(state, port, log)
        servers.append(second)
        await asyncio.gather(*burst)

        # Nothing alive from before the kill (boxed: it died with the server; plain: the
        # restart ended it). Processes started after the restart may still run.
        assert await eventually(lambda: not (set(pids_with_arg(run_arg)) & before_kill))
        # Nor anything of the box the sandbox had then (its supervisor, daemons, bwrap).
        assert await eventually(lambda: not (set(tagged_with(sandbox["id"])) & boxes_at_kill))

        # Let every process end, then read all records.
        async def listed() -> list[dict[str, Any]]:
            async with session.get(f"{host}/execute/processes", headers=auth) as resp:
                assert resp.status == 200
                return list((await resp.json())["processes"])

        deadline = time.monotonic() + 60
        records = await listed()
        while any(p["status"] in ("queued", "running") for p in records):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
            records = await listed()

    workspace = state / "sandboxes" / sandbox["id"] / "workspace"
    lines = (workspace / "markers.txt").read_text().splitlines()
    counts = collections.Counter(lines)
    by_id = collections.Counter(p["process_id"] for p in records)
    seen_ids = {a["process_id"] for a in answered.values()}
    statuses = collections.Counter(p["status"] for p in records)

    assert len(answered) == STARTS
    assert len(seen_ids) == STARTS  # one process per key, whichever answer the client saw
    assert set(by_id) == seen_ids and set(by_id.values()) == {1}  # exactly one record each
    assert max(counts.values()) == 1  # no code ran twice
    for proc in records:
        i = int(proc["command"].split()[1][1:])
        if proc["status"] == "completed":  # a finished output is intact
            assert proc["stdout"] == f"out{i}\n" and proc["stderr"] == f"err{i}\n"
            assert counts[f"m{i}"] == 1
        else:  # only the crash may end a start otherwise
            assert proc["status"] == "failed" and "stopped" in proc["error"], proc
        if i in alive_at_kill:  # running at the kill: failed, with the crash as the reason
            assert proc["status"] == "failed", proc
            assert proc["error"].startswith("the local backend stopped while"), proc
    print(
        f"\ncrash test: {STARTS} starts, {answered_before} answered before the SIGKILL, "
        f"{len(before_kill)} of their processes alive at the kill ({len(alive_at_kill)} "
        f"recorded failed by the crash); after the restart: "
        f"{dict(statuses)}; {sum(1 for n in retried.values() if n)} starts retried; "
        f"{len(counts)} markers, none twice"
    )


def _pids_cgroup(sandbox_id: str) -> Path | None:
    """Where the server (a child of this process) keeps the sandbox's ``pids`` cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
            return base / "hopx-local" / sandbox_id
    return None


async def test_restart_ends_what_carries_a_box_tag_or_sits_in_a_box_cgroup(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    # What a box could leave behind, planted by hand (a box itself dies with the server): a
    # process tagged with the sandbox's box, and one in the sandbox's cgroup.
    if ISOLATION == "none":
        pytest.skip("boxes only: without a box the restart finds processes by their own tag")
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    first, base_url = serve(state, port, log)
    servers.append(first)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/v1/sandboxes", json={"template_name": "base"}, headers={"X-API-Key": KEY}
        ) as resp:
            sandbox = await resp.json()
        # A background start is answered once the store has committed (the sandbox too).
        async with session.post(
            f"{sandbox['public_host']}/commands/background",
            json={"command": "true"},
            headers={"Authorization": f"Bearer {sandbox['auth_token']}"},
        ) as resp:
            assert resp.status == 200
    sandbox_id = sandbox["id"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    tagged_arg, grouped_arg = marker(), marker()
    env = {"PATH": "/usr/bin:/bin", "HOPX_LOCAL_BOX": sandbox_id}
    tagged = subprocess.Popen(["sleep", "60", tagged_arg], env=env)
    grouped = subprocess.Popen(["sleep", "60", grouped_arg], env={"PATH": "/usr/bin:/bin"})
    cgroup = _pids_cgroup(sandbox_id)
    in_cgroup = False
    if os.geteuid() == 0 and cgroup is not None and cgroup.parent.parent.exists():
        try:
            cgroup.mkdir(parents=True, exist_ok=True)
            (cgroup / "cgroup.procs").write_text(str(grouped.pid))
            in_cgroup = True
        except OSError:
            pass
    try:
        second, _ = serve(state, port, log)
        servers.append(second)
        assert tagged.wait(timeout=10) == -signal.SIGKILL
        if in_cgroup:
            assert grouped.wait(timeout=10) == -signal.SIGKILL
            assert not cgroup.exists()  # type: ignore[union-attr]
    finally:
        for proc in (tagged, grouped):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
