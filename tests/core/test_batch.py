"""run_many beyond the plain fan-out: per-task retries, a window of tasks in flight that
adapts to rate limits, sandboxes kept alive while their tasks run, and the terminal states
of a wait (a sandbox lost mid-wait, a kill confirmed by the server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    BatchStats,
    PollPolicy,
    ProcessFailedError,
    ProcessStatus,
    SandboxLostError,
    SandboxNotFoundError,
    Task,
    ValidationError,
    WaitTimeoutError,
)
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import Dialect

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


def flaky(fail_times: int) -> Task:
    """A task that fails its first ``fail_times`` runs (counted in a file of the sandbox)."""
    mark = f"flaky-{uuid.uuid4().hex}"
    return Task(
        code=(
            "import os\n"
            f"n = int(open({mark!r}).read()) if os.path.exists({mark!r}) else 0\n"
            f"open({mark!r}, 'w').write(str(n + 1))\n"
            f"print('run', n)\n"
            f"raise SystemExit(3 if n < {fail_times} else 0)\n"
        )
    )


async def test_retries_rerun_failed_tasks_and_report_the_ones_that_keep_failing(
    client: AsyncHopx, sandbox: AsyncSandbox, tmp_path: Path
) -> None:
    tasks = [flaky(1), Task(code="raise SystemExit(4)"), Task(code="print('fine')")]
    stats = BatchStats()
    manifest = tmp_path / "retries.jsonl"
    results = await client.run_many(
        tasks, sandboxes=[sandbox], retries=2, stats=stats, manifest=manifest
    )
    assert [r.status for r in results] == ["completed", "failed", "completed"]
    assert results[0].stdout == "run 1\n"
    assert results[1].exit_code == 4
    assert (stats.started, stats.retried) == (1 + 1 + 2 + 1 + 1 + 0, 1 + 2)
    # the attempts are in the manifest; run again, nothing starts
    again = BatchStats()
    await client.run_many(tasks, sandboxes=[sandbox], retries=2, stats=again, manifest=manifest)
    assert (again.from_manifest, again.started) == (3, 0)
    # one more retry allowed: only the task that failed runs again
    more = BatchStats()
    await client.run_many(tasks, sandboxes=[sandbox], retries=3, stats=more, manifest=manifest)
    assert (more.from_manifest, more.started) == (2, 1)


async def test_retries_with_check_raise_once_a_task_failed_for_good(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    stats = BatchStats()
    with pytest.raises(ProcessFailedError) as err:
        await client.run_many(
            [Task(code="raise SystemExit(5)")],
            sandboxes=[sandbox],
            retries=1,
            check=True,
            stats=stats,
        )
    assert err.value.result.exit_code == 5
    assert stats.started == 2


async def test_bad_retries_are_refused_before_any_request(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValidationError, match="retries"):
            await client.run_many([Task(code="1")], sandboxes=[sandbox], retries=bad)  # type: ignore[arg-type]
    assert await sandbox.list_processes() == []


async def test_rate_limits_lower_the_tasks_in_flight_and_never_fail_the_batch(
    tmp_path: Path,
) -> None:
    """The hopx dialect with its rate limits on; the client paces itself by their headers,
    so the 429s and 503s come from the fault proxy, standing in for another tenant taking
    the shared budget at the moment of the burst (a real server cannot be made to do that on
    demand): the first starts are refused. The batch completes, each task once, and the
    window of tasks in flight went down."""
    dialect = Dialect.named(
        "hopx", boot_seconds=0.0, agent_rate_per_minute=600, rate_window_seconds=5.0,
        control_rate_per_minute=1000, create_rate_per_minute=1000,
    )  # fmt: skip
    polling = PollPolicy(initial_interval=0.05, max_interval=0.5)
    refused = {"error": "slow down", "code": "RATE_LIMIT_EXCEEDED", "retry_after": 0.2}
    async with (
        LocalBackend(dialect=dialect, isolation="none") as backend,
        FaultProxy(backend.base_url) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url, polling=polling) as client,
        client.sandboxes.create("code-interpreter") as box,
    ):
        start = "/execute/background$"
        proxy.inject(Fault("POST", start, 429, body=refused, headers={"Retry-After": "0.2"},
                           times=6))  # fmt: skip
        proxy.inject(Fault("POST", start, 503, body={"error": "busy"}, times=2))
        stats = BatchStats()
        tasks = [Task(code=f"print({i})") for i in range(12)]
        results = await client.run_many(
            tasks, sandboxes=[box], max_concurrency=12, stats=stats, manifest=tmp_path / "m"
        )
        absorbed = sum(client.throttled.values())
        listed = await box.list_processes()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(12)]
    assert len(listed) == 12, "each task started once"
    assert absorbed > 0, "the transport absorbed 429s and counted them"
    assert stats.throttled > 0
    assert stats.lowest_concurrency < 12, "the window went down"


async def test_a_sandbox_with_a_short_timeout_is_kept_alive_while_its_task_runs(
    client: AsyncHopx,
) -> None:
    """Two sandboxes of 5 s, each with an 8 s task: one through run_many, one through
    wait(keep_alive=True); both survive, and expire once nothing holds them."""
    async with (
        client.sandboxes.create("code-interpreter", timeout_seconds=5) as one,
        client.sandboxes.create("code-interpreter", timeout_seconds=5) as two,
    ):
        slow = "import time; time.sleep(8); print('survived')"
        stats = BatchStats()
        proc = await two.run_code_background(slow)
        batch, waited = await asyncio.gather(
            client.run_many([Task(code=slow)], sandboxes=[one], stats=stats),
            proc.wait(keep_alive=True, timeout=60),
        )
        assert batch[0].stdout == waited.stdout == "survived\n"
        assert stats.keepalives >= 2
        assert (await one.get_info()).status == "running"
        # nothing holds them now: the last extension was of 5 s at most
        info = await one.get_info()
        assert info.expires_at is not None
        assert info.expires_at.timestamp() - time.time() <= 5.5


async def test_a_sandbox_killed_by_another_client_ends_waits_as_lost(
    backend: LocalBackend, tmp_path: Path
) -> None:
    polling = PollPolicy(initial_interval=0.05, max_interval=0.3)
    async with (
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url, polling=polling) as client,
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as other,
        client.sandboxes.create("code-interpreter") as doomed,
        client.sandboxes.create("code-interpreter") as spare,
    ):
        procs = [await doomed.run_code_background("import time; time.sleep(30)") for _ in "abc"]

        async def kill_soon() -> None:
            await asyncio.sleep(0.5)
            await (await other.sandboxes.connect(doomed.id)).kill()

        killer = asyncio.ensure_future(kill_soon())
        ended = await asyncio.gather(*(p.wait(timeout=20) for p in procs), return_exceptions=True)
        await killer
        assert all(isinstance(e, SandboxLostError) for e in ended), ended
        assert {e.sandbox_id for e in ended if isinstance(e, SandboxLostError)} == {doomed.id}
        assert all(isinstance(e, SandboxNotFoundError) for e in ended)

        # in a batch: the task is reported lost (and retried elsewhere when allowed)
        async with client.sandboxes.create("code-interpreter") as gone:
            stats = BatchStats()
            manifest = tmp_path / "lost.jsonl"
            slow = Task(code="import time; time.sleep(30)")

            async def kill_gone() -> None:
                while stats.started < 1:
                    await asyncio.sleep(0.05)
                await (await other.sandboxes.connect(gone.id)).kill()

            killer = asyncio.ensure_future(kill_gone())
            (result,) = await client.run_many(
                [slow], sandboxes=[gone], stats=stats, manifest=manifest, timeout=20
            )
            await killer
            assert result.status == ProcessStatus.LOST
            assert '"status":"lost"' in manifest.read_text()
            # resumed with a retry: the lost sandbox is skipped, the task runs in the spare
            quick = BatchStats()
            with pytest.raises(WaitTimeoutError):
                await client.run_many(
                    [slow], sandboxes=[gone, spare], retries=1, stats=quick,
                    manifest=manifest, timeout=2,
                )  # fmt: skip
            assert (quick.retried, quick.started) == (1, 1)
            (proc_info,) = await spare.list_processes()
            assert proc_info.status == "killed", "the run's timeout killed what it started"


async def test_kill_returns_once_the_server_reports_the_end(
    client: AsyncHopx, sandbox: AsyncSandbox
) -> None:
    proc = await sandbox.run_code_background(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)"
    )
    assert await proc.kill() is True
    assert (await proc.refresh()).is_done
    assert proc.status == ProcessStatus.KILLED
    assert await proc.kill() is False
    result = await proc.wait(timeout=10)
    assert result.status == ProcessStatus.KILLED, "killed, not lost: this client killed it"


async def test_kill_not_confirmed_in_time_raises(backend: LocalBackend, proxy: FaultProxy) -> None:
    """The server accepts the kill but keeps reporting the process running (rewritten by
    the proxy: a real server cannot be made to do that on demand)."""
    async with (
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.05, max_interval=0.1),
        ) as client,
        client.sandboxes.create("code-interpreter") as box,
    ):
        proc = await box.run_code_background("import time; time.sleep(30)")

        def still_running(key: str, status: int, data: Any) -> tuple[int, Any]:
            if key.startswith("GET /execute/processes") and isinstance(data, dict):
                if data.get("process_id") == proc.id:
                    data = {**data, "status": "running", "exit_code": None}
                for item in data.get("processes") or []:
                    if item.get("process_id") == proc.id:
                        item.update(status="running", exit_code=None, completed_at=None)
            return status, data

        proxy.rewrite_answer = still_running
        with pytest.raises(WaitTimeoutError, match="still running"):
            await proc.kill(timeout=0.5)
        proxy.rewrite_answer = None


async def test_the_keep_alive_route_is_served_by_every_dialect(
    dialect_sandbox: AsyncSandbox,
) -> None:
    """``PUT /v1/sandboxes/{id}/timeout`` (docs/wire.md C7), which keep-alive sends."""
    await dialect_sandbox.set_timeout(120)
    info = await dialect_sandbox.get_info()
    assert info.expires_at is not None
    assert 100 < info.expires_at.timestamp() - time.time() <= 121


async def test_keep_alive_costs_no_request_per_task(proxied: AsyncHopx, proxy: FaultProxy) -> None:
    """A sandbox with a long timeout: its expiry is read once for the whole batch, and
    nothing is extended while plenty of it is left."""
    async with proxied.sandboxes.create("code-interpreter", timeout_seconds=3600) as box:
        before = proxy.count("GET", "/v1/sandboxes/{sbx}")
        tasks = [Task(code=f"print({i})") for i in range(5)]
        results = await proxied.run_many(tasks, sandboxes=[box], max_concurrency=1)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
        assert proxy.count("GET", "/v1/sandboxes/{sbx}") - before == 1
        assert proxy.count("PUT", "/v1/sandboxes/{sbx}/timeout") == 0
