"""The generated blocking facade against the local backend."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import traceback
from typing import Any

import pytest

import hopx_async
import hopx_sync
from hopx_sync import (
    BackgroundProcess,
    CommandResult,
    Hopx,
    ProcessResult,
    Sandbox,
    WaitTimeoutError,
)


def test_background_round_trip(sandbox: Sandbox) -> None:
    proc = sandbox.run_code_background("print('hello')", name="greet")
    assert isinstance(proc, BackgroundProcess)
    assert proc["process_id"] == proc.id == proc.process_id
    assert proc.get("name") == "greet"
    assert "status" in proc
    result = proc.wait(timeout=30)
    assert isinstance(result, ProcessResult)
    assert (result.status, result.stdout) == ("completed", "hello\n")
    assert proc.done and proc.result == result
    assert proc.sandbox == sandbox
    assert repr(proc).startswith("<BackgroundProcess ")
    assert sandbox.process(proc.id) == proc
    infos = sandbox.list_processes(name="greet")
    assert [i["process_id"] for i in infos] == [proc.id]


def test_commands_foreground_and_background(sandbox: Sandbox) -> None:
    fg = sandbox.commands.run("echo hi")
    assert isinstance(fg, CommandResult)
    assert fg.stdout == "hi\n"
    bg = sandbox.commands.run("echo bye", background=True, name="cmd")
    assert isinstance(bg, BackgroundProcess)
    assert bg.wait(timeout=30).stdout == "bye\n"


def test_client_iterators(client: Hopx, sandbox: Sandbox) -> None:
    assert sandbox.id in {info.id for info in client.sandboxes.list()}
    procs = [sandbox.run_code_background(f"print({i})") for i in range(5)]
    seen = sorted(r.stdout for r in client.as_completed(procs, timeout=60))
    assert seen == [f"{i}\n" for i in range(5)]
    talker = sandbox.run_code_background(
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.1)"
    )
    with talker.output() as chunks:  # type: ignore[attr-defined]
        text = "".join(c.text for c in chunks if c.stream == "stdout")
    assert text == "0\n1\n2\n"


def test_wait_all_is_one_call_into_the_loop(
    client: Hopx, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = client.sandboxes.create("code-interpreter")
    try:
        procs = [s.run_code_background(f"print({i})") for i in range(100) for s in (sandbox, other)]
        hops = 0
        real = client._runner.run

        def counting(aw: Any, **kwargs: Any) -> Any:
            nonlocal hops
            hops += 1
            return real(aw, **kwargs)

        monkeypatch.setattr(client._runner, "run", counting)
        progress: list[int] = []
        results = client.wait_all(procs, timeout=60, on_progress=lambda d, t, r: progress.append(d))
        assert hops == 1
        assert [r.process_id for r in results] == [p.id for p in procs]
        assert all(r.ok for r in results)
        assert sorted(progress) == list(range(1, 201))
    finally:
        monkeypatch.undo()
        other.kill()


def test_calls_from_several_threads_overlap(sandbox: Sandbox) -> None:
    """Each call returns only once all of them run at the same time in the sandbox."""
    n = 4
    code = (
        "import os, time, uuid\n"
        "os.makedirs('meet', exist_ok=True)\n"
        "open(os.path.join('meet', uuid.uuid4().hex), 'w').close()\n"
        "deadline = time.time() + 20\n"
        f"while len(os.listdir('meet')) < {n} and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"print('met' if len(os.listdir('meet')) >= {n} else 'alone')\n"
    )
    outputs: list[str] = []

    def call() -> None:
        outputs.append(sandbox.run_code(code, timeout=60).stdout.strip())

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outputs == ["met"] * n


def test_call_from_inside_a_running_event_loop(sandbox: Sandbox) -> None:
    """A notebook cell: asyncio.run is running a coroutine that makes blocking calls."""

    async def cell() -> str:
        proc = sandbox.run_code_background("print('from a notebook')")
        return proc.wait(timeout=30).stdout

    assert asyncio.run(cell()) == "from a notebook\n"


def test_callbacks_run_on_the_callers_thread_and_may_call_the_api(
    client: Hopx, sandbox: Sandbox
) -> None:
    """``on_progress`` may remove each finished process through the blocking API."""
    procs = [sandbox.run_code_background(f"print({i})") for i in range(3)]
    threads: list[threading.Thread] = []
    removed: list[str] = []

    def progress(done: int, total: int, result: ProcessResult) -> None:
        threads.append(threading.current_thread())
        sandbox.remove_process(result.process_id)  # a blocking call from the callback
        removed.append(result.process_id)

    results = client.wait_all(procs, timeout=30, on_progress=progress)
    assert threads == [threading.current_thread()] * 3
    assert sorted(removed) == sorted(p.id for p in procs) == sorted(r.process_id for r in results)
    left = {info.process_id for info in sandbox.list_processes()}
    assert not left & set(removed)


def test_a_failing_callback_ends_the_batch_with_its_error(client: Hopx, sandbox: Sandbox) -> None:
    quick = sandbox.run_code_background("print('quick')")
    slow = sandbox.run_code_background("import time; time.sleep(60)")

    def progress(done: int, total: int, result: ProcessResult) -> None:
        raise LookupError(result.process_id)

    with pytest.raises(LookupError, match=quick.id):
        client.wait_all([quick, slow], timeout=30, on_progress=progress)
    assert slow.kill()  # still running: the batch stopped waiting, not the process
    assert sandbox.get_info().id == sandbox.id  # the client is still usable


def test_a_call_from_the_facades_loop_thread_raises(client: Hopx, sandbox: Sandbox) -> None:
    async def on_the_loop() -> None:
        sandbox.get_info()  # a blocking call on the loop's own thread

    with pytest.raises(RuntimeError, match="own event-loop thread"):
        client._runner.run(on_the_loop())
    assert sandbox.get_info().id == sandbox.id  # still usable


def test_keyboard_interrupt_during_wait_cancels_it(sandbox: Sandbox) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    proc = sandbox.run_code_background("import time; time.sleep(60)")

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not sandbox.watcher_stats.active and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        proc.wait()
    assert sandbox.watcher_stats.waiters == 0
    for _ in range(200):  # the cancelled poll task ends at the loop's next turns
        if not sandbox.watcher_stats.active:
            break
        time.sleep(0.01)
    assert not sandbox.watcher_stats.active, "the wait was cancelled: nobody polls any more"
    assert proc.kill() is True  # the client is still usable
    assert proc.wait(timeout=30).status == "killed"


def test_close_leaves_no_thread_behind(backend: Any) -> None:
    before = set(threading.enumerate())
    client = Hopx(api_key=backend.api_key, base_url=backend.base_url)
    runner = client._runner
    with client.sandboxes.create("code-interpreter") as sbx:
        sbx.run_code("print(1)")
    executor = getattr(runner.loop, "_default_executor", None)
    helpers = list(getattr(executor, "_threads", ()))
    client.close()
    assert client.closed
    assert not runner.thread.is_alive()
    assert not any(t.is_alive() for t in helpers)
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("hopx-sync")]
    assert left == []
    with pytest.raises(RuntimeError, match="closed"):
        client.sandboxes.get("sbx_1")
    client.close()  # twice is harmless


def test_leaving_with_stops_the_thread(backend: Any) -> None:
    with Hopx(api_key=backend.api_key, base_url=backend.base_url) as client:
        thread = client._runner.thread
        assert thread.is_alive()
    assert not thread.is_alive()


def test_exceptions_keep_their_class_and_name_the_callers_line(client: Hopx, backend: Any) -> None:
    async def async_error() -> type[BaseException]:
        async with hopx_async.AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as ac:
            try:
                await ac.sandboxes.get("sbx_does_not_exist")
            except hopx_async.HopxError as exc:
                return type(exc)
        raise AssertionError("no error")

    callers_line = sys._getframe().f_lineno + 2
    with pytest.raises(hopx_sync.NotFoundError) as excinfo:
        client.sandboxes.get("sbx_does_not_exist")
    assert type(excinfo.value) is asyncio.run(async_error())
    assert excinfo.type is hopx_sync.SandboxNotFoundError
    frames = traceback.extract_tb(excinfo.value.__traceback__)
    assert any(f.filename == __file__ and f.lineno == callers_line for f in frames)


def test_wait_timeout_is_a_timeout_error(sandbox: Sandbox) -> None:
    proc = sandbox.run_code_background("import time; time.sleep(30)")
    with pytest.raises(TimeoutError):
        proc.wait(timeout=0.2)
    with pytest.raises(WaitTimeoutError):
        proc.wait(timeout=0.2)
    assert proc.kill() is True


def test_standalone_create_uses_the_shared_default_client(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOPX_BASE_URL", backend.base_url)
    monkeypatch.setenv("HOPX_API_KEY", backend.api_key)
    with Sandbox.create(template="code-interpreter") as first:
        second = Sandbox.create(template="code-interpreter")
        try:
            assert first._runner is second._runner is hopx_sync._runner.default_runner()
            assert first.client == second.client
            assert first.run_code_background("print(7)").wait(timeout=30).stdout == "7\n"
            again = Sandbox.connect(second.id)
            assert again.id == second.id
        finally:
            second.kill()
    hopx_sync.close_default_client()
    assert hopx_sync._runner.default_runner().thread.is_alive()


def test_client_from_a_sandbox_does_not_own_the_loop(sandbox: Sandbox, client: Hopx) -> None:
    assert sandbox.client == client
    assert sandbox.client._owns_runner is False
    assert client._owns_runner is True


def test_as_completed_hands_over_finished_results_in_one_hop(
    client: Hopx, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = [sandbox.run_code_background(f"print({i})") for i in range(60)]
    client.wait_all(procs, timeout=60)
    hops = 0
    real = client._runner.run

    def counting(aw: Any) -> Any:
        nonlocal hops
        hops += 1
        return real(aw)

    monkeypatch.setattr(client._runner, "run", counting)
    results = list(client.as_completed(procs, timeout=60))
    monkeypatch.undo()
    assert sorted(r.process_id for r in results) == sorted(p.id for p in procs)
    assert hops <= 3


def test_run_code_timeout_is_a_result(sandbox: Sandbox) -> None:
    result = sandbox.run_code("echo begun; sleep 30", language="bash", timeout=1)
    assert result.success is False
    assert result.exit_code == 124
    assert result.stdout == "begun\n"
