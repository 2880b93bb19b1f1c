"""A resumable fan-out: a driver SIGKILLed while tasks run and while starts are in flight,
run again with the same manifest, starts every task exactly once.

The driver runs as a subprocess (``resume_driver.py``, or ``hopx map``) through the test
proxy, which holds the answers to the later starts (the backend has started the process,
the driver has not seen it): the driver is killed with those starts in flight, and with
tasks running (they wait for a file the test writes once the second run is under way).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    BatchStats,
    PollPolicy,
    SandboxNotFoundError,
    Task,
    Timeouts,
    ValidationError,
)
from hopx_async._manifest import Manifest, process_name
from hopx_async.local import LocalBackend

from .proxy import FaultProxy
from .resume_driver import HOLD

pytestmark = pytest.mark.anyio

DRIVER = Path(__file__).with_name("resume_driver.py")
COUNT = 10


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def in_flight(path: Path) -> bool:
    """Two tasks ended, and two starts recorded whose answers never came."""
    recs = records(path)
    ended = {r["task"] for r in recs if r.get("kind") == "ended"}
    intents = {r["task"] for r in recs if r.get("kind") == "intent"}
    started = {r["task"] for r in recs if r.get("kind") == "started"}
    return len(ended) >= 2 and len(intents - started) >= 2


def holding_from(nth: int) -> Callable[[str], float]:
    """Hold the answer of every start from the ``nth`` on (the process is started)."""
    seen = {"starts": 0}

    def hold(key: str) -> float:
        if key != "POST /execute/background":
            return 0.0
        seen["starts"] += 1
        return 60.0 if seen["starts"] >= nth else 0.0

    return hold


async def kill_when(proc: asyncio.subprocess.Process, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.returncode is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline, "the driver never got there"
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def process_lists(boxes: list[AsyncSandbox]) -> list[Any]:
    return [info for box in boxes for info in await box.list_processes()]


async def release(*boxes: AsyncSandbox) -> None:
    """Let the tasks that wait for ``go`` end."""
    for box in boxes:
        await box.files.write("go", "1")


def env_for(backend: LocalBackend, url: str) -> dict[str, str]:
    return {**os.environ, "HOPX_API_KEY": backend.api_key, "HOPX_BASE_URL": url}


async def test_a_killed_run_many_resumes_without_starting_a_task_twice(
    backend: LocalBackend, client: AsyncHopx, tmp_path: Path
) -> None:
    manifest = tmp_path / "batch.jsonl"
    async with (
        FaultProxy(backend.base_url) as proxy,
        client.sandboxes.create("code-interpreter") as one,
        client.sandboxes.create("code-interpreter") as two,
    ):
        proxy.hold = holding_from(5)  # tasks 0-3 start, 0 and 1 end; 4 and 5 are in flight
        args = [sys.executable, str(DRIVER), str(manifest), str(COUNT), one.id, two.id]
        env = env_for(backend, proxy.url)
        first = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE)
        await kill_when(first, lambda: in_flight(manifest) and proxy.count(
            "POST", "/execute/background") >= 6)  # fmt: skip
        proxy.release()
        second = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        await release(one, two)
        out, _ = await asyncio.wait_for(second.communicate(), 90)
        assert second.returncode == 0
        summary = json.loads(out.decode().strip().splitlines()[-1])
        # read from the server, before any sandbox is killed
        infos = await process_lists([one, two])
    assert summary["stdout"] == [f"out-{i}\n" for i in range(COUNT)]
    stats = summary["stats"]
    assert stats["from_manifest"] == 2
    assert stats["reattached"] == 4, "2 running, 2 whose start was in flight"
    assert stats["started"] == COUNT - 6
    outputs = sorted(info.stdout for info in infos)
    assert outputs == sorted(f"out-{i}\n" for i in range(COUNT)), "one process per task"


async def test_hopx_map_killed_resumes_over_the_same_sandboxes(
    backend: LocalBackend, client: AsyncHopx, tmp_path: Path
) -> None:
    manifest = tmp_path / "map.jsonl"
    inputs = [str(i) for i in range(COUNT)]
    code = "import os\ni = int(os.environ['HOPX_INPUT'])\nprint(f'out-{i}', flush=True)\n"
    code += "if i >= 2:\n" + textwrap.indent(HOLD, "    ")
    async with (
        FaultProxy(backend.base_url) as proxy,
        client.sandboxes.create("code-interpreter") as one,
        client.sandboxes.create("code-interpreter") as two,
    ):
        proxy.hold = holding_from(5)
        args = [
            sys.executable, "-m", "hopx_async.cli", "map", "-c", code, "-j", "4",
            "--sandbox", one.id, "--sandbox", two.id, "--manifest", str(manifest), *inputs,
        ]  # fmt: skip
        env = env_for(backend, proxy.url)
        first = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        await kill_when(first, lambda: in_flight(manifest) and proxy.count(
            "POST", "/execute/background") >= 6)  # fmt: skip
        proxy.release()
        second = await asyncio.create_subprocess_exec(
            *args, "--json", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await release(one, two)
        out, err = await asyncio.wait_for(second.communicate(), 90)
        assert second.returncode == 0, err.decode()
        infos = await process_lists([one, two])
    rows = json.loads(out)
    assert [row["stdout"] for row in rows] == [f"out-{i}\n" for i in range(COUNT)]
    note = err.decode()
    assert "2 from the manifest, 4 re-attached, 4 started" in note
    outputs = sorted(info.stdout for info in infos)
    assert outputs == sorted(f"out-{i}\n" for i in range(COUNT)), "one process per task"


async def test_a_start_whose_intent_was_recorded_is_looked_up_before_starting_again(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """One intent whose start reached the server (found by name: not started again), one
    whose start never did (started once the request timeout has passed since the intent)."""
    manifest = tmp_path / "intent.jsonl"
    tasks = [Task(code=f"print('t{i}')") for i in range(2)]
    written = Manifest.open(manifest, tasks)
    names = [process_name(task, written.id, i, 0) for i, task in enumerate(tasks)]
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=backend.base_url,
            timeouts=Timeouts(request=1.0),
            polling=PollPolicy(initial_interval=0.02, max_interval=0.2),
        ) as client,
        client.sandboxes.create("code-interpreter") as box,
    ):
        for i in range(2):
            written.intent(i, 0, box.id, names[i])
        written.close()
        # the first start reached the server before its driver died; the second did not
        await box.run_code_background("print('t0')", name=names[0])
        stats = BatchStats()
        results = await client.run_many(
            tasks, sandboxes=[box], manifest=manifest, retries=0, stats=stats
        )
        infos = await box.list_processes()
    assert [r.stdout for r in results] == ["t0\n", "t1\n"]
    assert (stats.reattached, stats.started) == (1, 1)
    assert sorted(info.name or "" for info in infos) == sorted(names)


async def test_a_manifest_of_another_batch_is_refused_before_any_request(
    client: AsyncHopx, sandbox: AsyncSandbox, tmp_path: Path
) -> None:
    manifest = tmp_path / "other.jsonl"
    Manifest.open(manifest, [Task(code="print(1)")]).close()
    before = manifest.read_bytes()
    with pytest.raises(ValidationError, match="different batch"):
        await client.run_many([Task(code="print(2)")], sandboxes=[sandbox], manifest=manifest)
    assert manifest.read_bytes() == before
    # one run at a time: a manifest in use by another run is refused too
    tasks = [Task(code="print(1)")]
    held = Manifest.open(manifest, tasks)
    with pytest.raises(ValidationError, match="in use by another run"):
        await client.run_many(tasks, sandboxes=[sandbox], manifest=manifest)
    held.close()
    assert await sandbox.list_processes() == []


async def test_a_finished_manifest_runs_nothing_again(
    client: AsyncHopx, sandbox: AsyncSandbox, tmp_path: Path
) -> None:
    manifest = tmp_path / "done.jsonl"
    tasks = [Task(code=f"print({i})") for i in range(3)]
    first = await client.run_many(tasks, sandboxes=[sandbox], manifest=manifest)
    stats = BatchStats()
    again = await client.run_many(tasks, sandboxes=[sandbox], manifest=manifest, stats=stats)
    assert again == first
    assert (stats.from_manifest, stats.started) == (3, 0)
    assert len(await sandbox.list_processes()) == 3
    # a line cut short by a crash is skipped, and the next record starts on a line of its own
    with manifest.open("a") as cut:
        cut.write('{"kind": "ended", "ta')
    assert await client.run_many(tasks, sandboxes=[sandbox], manifest=manifest) == first


async def test_a_manifest_start_is_found_by_name_on_every_dialect(
    dialect_sandbox: AsyncSandbox, tmp_path: Path
) -> None:
    """The name a manifest gives its starts comes back in the process list of every dialect
    (docs/wire.md A3, A4: ``name`` in the start body and in each listed process)."""
    manifest = tmp_path / "named.jsonl"
    tasks = [Task(code="print('named')"), Task(command="echo named")]
    results = await dialect_sandbox.client.run_many(
        tasks, sandboxes=[dialect_sandbox], manifest=manifest
    )
    written = Manifest.open(manifest, tasks)
    written.close()
    names = {process_name(task, written.id, i, 0) for i, task in enumerate(tasks)}
    listed = {info.name for info in await dialect_sandbox.list_processes()}
    assert names <= listed
    assert [r.status for r in results] == ["completed", "completed"]


async def test_an_interrupted_run_leaves_its_processes_for_the_next_one_in_any_sandbox(
    client: AsyncHopx, tmp_path: Path
) -> None:
    """Cancelled from outside, a run with a manifest leaves its processes running; the next
    run waits on them in their sandbox, connected by id though not among ``sandboxes=``."""
    manifest = tmp_path / "interrupted.jsonl"
    tasks = [Task(code=f"import time; time.sleep(1); print('i{i}')") for i in range(3)]
    async with (
        client.sandboxes.create("code-interpreter") as first,
        client.sandboxes.create("code-interpreter") as second,
    ):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                client.run_many(tasks, sandboxes=[first], manifest=manifest), 0.5
            )
        assert {info.status for info in await first.list_processes()} == {"running"}
        stats = BatchStats()
        results = await client.run_many(tasks, sandboxes=[second], manifest=manifest, stats=stats)
        assert [r.stdout for r in results] == ["i0\n", "i1\n", "i2\n"]
        assert (stats.reattached, stats.started) == (3, 0)
        assert await second.list_processes() == []


async def test_hopx_map_reuses_the_sandboxes_it_created_and_kills_them_at_the_end(
    backend: LocalBackend, client: AsyncHopx, tmp_path: Path
) -> None:
    manifest = tmp_path / "created.jsonl"
    code = "import os, time; time.sleep(1); print(os.environ['HOPX_INPUT'])"
    args = [sys.executable, "-m", "hopx_async.cli", "map", "-n", "1", "--manifest",
            str(manifest), "-c", code, "x", "y"]  # fmt: skip
    env = env_for(backend, backend.base_url)
    first = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE)

    def both_started() -> bool:
        return sum(r.get("kind") == "started" for r in records(manifest)) == 2

    await kill_when(first, both_started)
    (created,) = [r["sandbox_id"] for r in records(manifest) if r["kind"] == "sandbox"]
    second = await asyncio.create_subprocess_exec(
        *args, "--json", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, err.decode()
    assert [row["stdout"] for row in json.loads(out)] == ["x\n", "y\n"]
    assert "0 from the manifest, 2 re-attached, 0 started" in err.decode()
    assert [r["sandbox_id"] for r in records(manifest) if r["kind"] == "sandbox"] == [created]
    with pytest.raises(SandboxNotFoundError):
        await client.sandboxes.get(created)
