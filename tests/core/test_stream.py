"""Streamed execution (``run_code_stream``, ``commands.stream``) and pushed process output."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    BadRequestError,
    OutputChunk,
    StreamEvent,
    ValidationError,
)

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.anyio


async def test_run_code_stream_yields_typed_events(sandbox: AsyncSandbox) -> None:
    code = (
        "import sys\n"
        "print('a', flush=True)\n"
        "print('b', file=sys.stderr, flush=True)\n"
        "print('c', flush=True)\n"
    )
    events = [e async for e in sandbox.run_code_stream(code, timeout=30)]
    assert all(isinstance(e, StreamEvent) for e in events)
    assert "".join(e.text for e in events if e.kind == "stdout") == "a\nc\n"
    assert "".join(e.text for e in events if e.kind == "stderr") == "b\n"
    assert [e.kind for e in events][-2:] == ["result", "complete"]
    result = events[-2]
    assert result.exit_code == 0
    assert result.success is True
    assert result.timed_out is False
    assert result.execution_time is not None and result.execution_time >= 0
    assert events[-1].success is True
    assert all(e.is_output for e in events[:-2])
    assert all(e.timestamp for e in events[:-2])


async def test_run_code_stream_env_and_failure(sandbox: AsyncSandbox) -> None:
    code = "import os, sys\nprint(os.environ['ONE'])\nsys.exit(4)\n"
    events = [e async for e in sandbox.run_code_stream(code, env={"ONE": "1"})]
    assert "".join(e.text for e in events if e.kind == "stdout") == "1\n"
    result = next(e for e in events if e.kind == "result")
    assert result.exit_code == 4
    assert result.success is False
    assert events[-1].kind == "complete"
    assert events[-1].success is False


async def test_run_code_stream_timeout(sandbox: AsyncSandbox) -> None:
    code = "import time\nprint('go', flush=True)\ntime.sleep(60)\n"
    events = [e async for e in sandbox.run_code_stream(code, timeout=1)]
    result = next(e for e in events if e.kind == "result")
    assert result.timed_out is True
    assert result.success is False
    assert "timed out" in "".join(e.text for e in events if e.kind == "stderr")


async def test_commands_stream(sandbox: AsyncSandbox) -> None:
    events = [e async for e in sandbox.commands.stream("echo one; echo two >&2; exit 2")]
    assert "".join(e.text for e in events if e.kind == "stdout") == "one\n"
    assert "".join(e.text for e in events if e.kind == "stderr") == "two\n"
    assert next(e for e in events if e.kind == "result").exit_code == 2


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"code": ""}, "code"),
        ({"code": "print(1)", "timeout": 301}, "timeout"),
        ({"code": "print(1)", "timeout": -1}, "timeout"),
        ({"code": "print(1)", "env": {"A": 1}}, "env"),
    ],
)
async def test_run_code_stream_checks_arguments_before_io(
    backend: Any, kwargs: dict[str, Any], argument: str
) -> None:
    async with (
        FaultProxy(backend.base_url) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        before = sum(proxy.counts.values())
        with pytest.raises(ValidationError) as info:
            async for _ in sandbox.run_code_stream(**kwargs):
                pass
        assert info.value.argument == argument
        assert sum(proxy.counts.values()) == before, "no request was sent"


async def test_run_code_stream_server_error_message_raises(sandbox: AsyncSandbox) -> None:
    with pytest.raises(BadRequestError) as info:
        async for _ in sandbox.run_code_stream("1", working_dir="/workspace/../../etc"):
            pass
    assert "working_dir" in str(info.value)


async def test_pushed_output_each_byte_once_and_in_wait(sandbox: AsyncSandbox) -> None:
    code = (
        "import sys, time\n"
        "for i in range(5):\n"
        "    print(f'line {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.05)\n"
        "sys.stdout.write('z' * 3_000_000)\n"
    )
    proc = await sandbox.run_code_background(code)
    chunks: list[OutputChunk] = [c async for c in proc.output()]
    out = "".join(c.text for c in chunks if c.stream == "stdout")
    err = "".join(c.text for c in chunks if c.stream == "stderr")
    assert out == "".join(f"line {i}\n" for i in range(5)) + "z" * 3_000_000
    assert err == "".join(f"err {i}\n" for i in range(5))
    result = await proc.wait()
    assert result.stdout == out
    assert result.stderr == err
    assert result.exit_code == 0


async def test_output_falls_back_to_offsets_when_push_fails(backend: Any) -> None:
    """The proxy refuses the WebSocket (as a server without the route would): offsets are read."""
    async with (
        FaultProxy(backend.base_url) as proxy,
        AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client,
        client.sandboxes.create("base") as sandbox,
    ):
        proxy.inject(Fault("GET", r"/stream$", 503, {"error": "no", "code": "X"}, times=100))
        proc = await sandbox.run_code_background(
            "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.05)"
        )
        text = "".join([c.text async for c in proc.output()])
        assert text == "0\n1\n2\n"
        assert proxy.count("GET", "/execute/processes/{proc}/stream") == 1
        assert proxy.count("GET", "/execute/processes/{proc}") >= 1
        assert (await proc.wait()).stdout == text
        again = await sandbox.run_code_background("print('again')")
        assert "".join([c.text async for c in again.output()]) == "again\n"
        assert proxy.count("GET", "/execute/processes/{proc}/stream") == 1, "not tried again"


async def test_leaving_a_stream_early_ends_the_code(sandbox: AsyncSandbox) -> None:
    code = "import time\nprint('up', flush=True)\ntime.sleep(60)\n"
    stream = sandbox.run_code_stream(code, timeout=120)
    async with contextlib.aclosing(stream):
        async for event in stream:
            assert event.text == "up\n"
            break
    # Nothing of the streamed code runs any more in the sandbox (bounded wait).
    for _ in range(200):
        result = await sandbox.commands.run("ps -eo args")
        if "time.sleep(60)" not in result.stdout:
            break
    else:
        raise AssertionError(result.stdout)
