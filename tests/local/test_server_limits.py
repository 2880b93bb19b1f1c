"""What one client can hold of the local backend: a body that never arrives, unfinished
headers, idle connections by the hundred, every connection busy, a client that goes away
during a blocking execution, answers capped in size, and how malformed requests are logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Answer, Api, Sandbox, _raw_http, _request

# -- connections ---------------------------------------------------------------------------------


@pytest.fixture
async def quick_backend() -> AsyncIterator[LocalBackend]:
    """A backend in this loop with a one-second read deadline and a cap of 50 connections."""
    backend = LocalBackend()
    backend.read_timeout = 1.0
    backend.max_connections = 50
    async with backend:
        yield backend


@pytest.mark.anyio
async def test_a_body_shorter_than_its_length_is_not_held(quick_backend: LocalBackend) -> None:
    request = _request(
        "POST", "/v1/sandboxes", {"X-API-Key": quick_backend.api_key.encode()}, b"{}"
    )
    request = request.replace(b"Content-Length: 2", b"Content-Length: 100")
    status, body = await _raw_http(quick_backend.base_url, request)
    assert status == 408, body
    assert body["code"] == "REQUEST_TIMEOUT"


@pytest.mark.anyio
async def test_unfinished_headers_are_not_held(quick_backend: LocalBackend) -> None:
    host, port = quick_backend.base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b"", "closed by the server"
    finally:
        writer.close()


@pytest.mark.anyio
async def test_hundreds_of_idle_connections_do_not_lock_out_a_real_request(
    quick_backend: LocalBackend,
) -> None:
    """300 idle sockets against a cap of 50: the oldest idle ones are closed for new ones."""
    host, port = quick_backend.base_url.removeprefix("http://").rsplit(":", 1)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for i in range(300):
            reader, writer = await asyncio.open_connection(host, int(port))
            if i % 3 == 0:  # a third of them started a request and stopped mid-headers
                writer.write(b"GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\n")
            idle.append((reader, writer))
        async with aiohttp.ClientSession() as session:
            api = Api(session, quick_backend.base_url, quick_backend.api_key)
            answer: Answer = await api.cp("GET", "/v1/sandboxes")
            assert answer.status == 200, answer.body
        closed = 0
        for reader, _ in idle[:250]:  # all but the last cap's worth were closed for newer ones
            closed += await asyncio.wait_for(reader.read(), 30) == b""
        assert closed == 250
    finally:
        for _, writer in idle:
            writer.close()


@pytest.mark.anyio
async def test_a_new_connection_is_refused_while_every_one_is_busy() -> None:
    """Cap 2, two requests running: a third connection gets the documented 503 body."""
    backend = LocalBackend()
    backend.max_connections = 2
    async with backend:
        async with aiohttp.ClientSession() as session:
            sbx = await Api(session, backend.base_url, backend.api_key).create()
        # A process is found by a ``sleep`` argument (code itself is never on a command line).
        markers = [f"0.0{uuid.uuid4().int % 10**8:08d}1" for _ in range(2)]
        sessions = [aiohttp.ClientSession() for _ in range(2)]
        try:
            busy = [
                asyncio.ensure_future(
                    Api(s, backend.base_url, backend.api_key).agent(
                        sbx,
                        "POST",
                        "/execute",
                        json={"code": _SLEEPER.format(m), "timeout": 120},
                    )
                )
                for s, m in zip(sessions, markers, strict=True)
            ]
            await _until(lambda: all(_pids_with(m) for m in markers), "both running")
            status, body = await _raw_http(backend.base_url, _request("GET", "/health", {}))
            assert status == 503, body
            assert body["code"] == "SERVICE_UNAVAILABLE" and body["error"]
            for request in busy:
                request.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
        finally:
            for s in sessions:
                await s.close()
        await _until(lambda: not any(_pids_with(m) for m in markers), "ended")
        async with aiohttp.ClientSession() as session:
            answer = await Api(session, backend.base_url, backend.api_key).cp(
                "GET", "/v1/sandboxes"
            )
            assert answer.status == 200, "served again once the busy ones are gone"


# -- logging -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_malformed_requests_and_cut_bodies_are_one_info_line(
    quick_backend: LocalBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = quick_backend.base_url
    status, _ = await _raw_http(url, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    status, _ = await _raw_http(url, b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n")
    assert status == 400
    key = quick_backend.api_key.encode()
    chunked = _request("POST", "/v1/sandboxes", {"X-API-Key": key, "Transfer-Encoding": b"chunked"})
    chunked = chunked.replace(b"Content-Length: 0\r\n", b"") + b"zz\r\n{}\r\n0\r\n\r\n"
    status, _ = await _raw_http(url, chunked)
    assert status == 400
    # A body cut off by the client going away.
    host, port = url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    request = _request("POST", "/v1/sandboxes", {"X-API-Key": key}, b'{"template_name": "base"}')
    writer.write(request[:-10])
    await writer.drain()
    writer.close()
    cut = ("went away while sending the body", "request body cut off")
    await _until(lambda: any(c in r.getMessage() for r in caplog.records for c in cut), "logged")
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records), "no tracebacks"
    infos = [r.getMessage() for r in caplog.records if r.name.startswith("hopx_async")]
    assert any("Error handling request" in line for line in infos), infos


# -- a client that goes away ends its code -------------------------------------------------------


#: Python code that runs ``sleep 100 MARKER`` in a child (its group ends with the code's).
_SLEEPER = "import subprocess\nsubprocess.run(['sleep', '100', {!r}])"


def _pids_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


async def _until(condition: Any, what: str, rounds: int = 300) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not {what} after {rounds} checks")


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["/execute", "/commands/run"])
async def test_a_client_that_goes_away_ends_its_blocking_code(
    api: Api, sbx: Sandbox, route: str
) -> None:
    marker = f"0.0{uuid.uuid4().int % 10**8:08d}1"
    code = _SLEEPER.format(marker)
    if route == "/execute":
        body: dict[str, Any] = {"code": code, "timeout": 120}
    else:
        body = {"command": f"sleep 100 {marker}", "timeout": 120}
    request = asyncio.ensure_future(api.agent(sbx, "POST", route, json=body))
    await _until(lambda: _pids_with(marker), "started")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await _until(lambda: not _pids_with(marker), "ended")


# -- answer sizes --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_code_output_past_8_mib_is_flagged(api: Api, sbx: Sandbox) -> None:
    code = (
        "import sys\nsys.stdout.write('x' * (9 * 1024 * 1024) + 'END')\n"
        "print('small', file=sys.stderr)"
    )
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 60})
    assert answer.status == 200, answer.body
    assert answer.body["stdout_truncated"] is True
    assert answer.body["stderr_truncated"] is False
    assert len(answer.body["stdout"]) == 8 * 1024 * 1024
    assert answer.body["stdout"].endswith("xEND"), "the tail is kept"
    assert answer.body["stderr"] == "small\n"


@pytest.mark.anyio
async def test_one_list_answer_is_capped_in_total(api: Api, sbx: Sandbox) -> None:
    """12 processes with 1 MiB of output each: 12 MiB of tails, cut to a fair share of 8 Mi."""
    mib = 1024 * 1024
    ids = []
    for i in range(12):
        code = f"import sys\nsys.stdout.write('o' * {mib - 8} + 'end{i:05d}')"
        ids.append((await api.background(sbx, code))["process_id"])
    small = (await api.background(sbx, "print('tiny')"))["process_id"]
    for process_id in [*ids, small]:
        assert (await api.wait_done(sbx, process_id))["status"] == "completed"
    answer = await api.agent(sbx, "GET", "/execute/processes")
    assert answer.status == 200
    by_id = {p["process_id"]: p for p in answer.body["processes"]}
    total = sum(len(p["stdout"]) + len(p["stderr"]) for p in by_id.values())
    assert total <= 8 * mib
    assert by_id[small]["stdout"] == "tiny\n" and by_id[small]["stdout_truncated"] is False
    for i, process_id in enumerate(ids):
        proc = by_id[process_id]
        assert proc["stdout_truncated"] is True
        assert proc["stdout"].endswith(f"end{i:05d}"), "each keeps the tail of its output"
        assert len(proc["stdout"]) > 8 * mib // 13, "a fair share each"
    whole = await api.process(sbx, ids[0], "?stdout_offset=0&max_bytes=2097152")
    assert len(whole["stdout"]) == mib, "the whole output is still readable by offset"
