"""Bad input to the local backend: a 4xx with the documented body, never a 500, nothing saved.

Also what one client can hold: a body that never arrives, idle connections by the hundred,
a client that goes away during a blocking execution, and how all that is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Answer, Api, Sandbox

SURROGATE = "\ud800"
TOO_BIG = [10**12, 10**20, 2**31, 2**64, 10**400, -1, 0]


# -- ranges: refused before anything is written ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", TOO_BIG)
async def test_set_timeout_out_of_range_is_refused_and_not_saved(
    api: Api, sbx: Sandbox, seconds: int
) -> None:
    before = (await api.cp("GET", f"/v1/sandboxes/{sbx.id}")).body
    path = f"/v1/sandboxes/{sbx.id}/timeout"
    answer = await api.cp("PUT", path, json={"timeout_seconds": seconds})
    answer.expect_error(400, "INVALID_REQUEST")
    after = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
    assert after.status == 200
    assert after.body["timeout_seconds"] == before["timeout_seconds"]
    assert after.body["expires_at"] == before["expires_at"]
    assert (await api.cp("GET", "/v1/sandboxes")).status == 200


@pytest.mark.anyio
async def test_largest_timeout_is_a_date(api: Api, sbx: Sandbox) -> None:
    answer = await api.cp(
        "PUT", f"/v1/sandboxes/{sbx.id}/timeout", json={"timeout_seconds": 2**31 - 1}
    )
    assert answer.status == 200, answer.body
    assert answer.body["expires_at"].endswith("Z")


async def _sandbox_ids(api: Api) -> set[str]:
    answer = await api.cp("GET", "/v1/sandboxes?limit=1000")
    assert answer.status == 200, answer.body
    return {item["id"] for item in answer.body["data"]}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"timeout_seconds": 10**20},
        {"timeout_seconds": 10**12},
        {"timeout_seconds": 1.5},
        {"env_vars": {"A\n": "v"}},
        {"env_vars": {"A": SURROGATE}},
        {"env_vars": {SURROGATE: "v"}},
        {"region": SURROGATE},
        {"template_name": SURROGATE},
    ],
)
async def test_create_with_bad_input_creates_nothing(api: Api, body: dict[str, Any]) -> None:
    before = await _sandbox_ids(api)
    answer = await api.cp("POST", "/v1/sandboxes", json={"template_name": "base", **body})
    assert answer.status in (400, 404), answer.body
    assert answer.body["code"] in ("INVALID_REQUEST", "RESOURCE_NOT_FOUND")
    assert await _sandbox_ids(api) == before


@pytest.mark.anyio
async def test_a_stored_out_of_range_timeout_is_read_without_error(tmp_path: Path) -> None:
    """A state directory written before ranges were checked still lists and gets."""
    async with LocalBackend(state_dir=tmp_path) as backend, aiohttp.ClientSession() as session:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
    db = sqlite3.connect(tmp_path / "hopx-local.sqlite3")
    try:
        (raw,) = db.execute("SELECT data FROM sandboxes WHERE id = ?", (sbx.id,)).fetchone()
        data = json.loads(raw)
        data.update(timeout_seconds=10**12, expires_at=1e20)
        db.execute("UPDATE sandboxes SET data = ? WHERE id = ?", (json.dumps(data), sbx.id))
        db.commit()
    finally:
        db.close()
    async with LocalBackend(state_dir=tmp_path) as backend, aiohttp.ClientSession() as session:
        api = Api(session, backend.base_url, backend.api_key)
        got = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
        assert got.status == 200, got.body
        assert got.body["expires_at"] is None
        listed = await api.cp("GET", "/v1/sandboxes")
        assert listed.status == 200, listed.body
        assert [item["id"] for item in listed.body["data"]] == [sbx.id]
        fixed = await api.cp(
            "PUT", f"/v1/sandboxes/{sbx.id}/timeout", json={"timeout_seconds": 3600}
        )
        assert fixed.status == 200, fixed.body


# -- text that no process can take --------------------------------------------------------------

AGENT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/execute", {"code": "print(1)", "timeout": 10**400}),
    ("POST", "/execute/background", {"code": "print(1)", "timeout": 10**400}),
    ("POST", "/commands/run", {"command": "true", "timeout": -(10**400)}),
    ("POST", "/execute", {"code": SURROGATE}),
    ("POST", "/execute", {"code": "print(1)", "env": {"A": SURROGATE}}),
    ("POST", "/execute", {"code": "print(1)", "working_dir": SURROGATE}),
    ("POST", "/execute", {"code": "print(1)", "workdir": "/workspace/" + SURROGATE}),
    ("POST", "/execute/background", {"code": "x" + SURROGATE}),
    ("POST", "/execute/background", {"code": "print(1)", "env": {"A": SURROGATE}}),
    ("POST", "/execute/background", {"code": "print(1)", "env": {"A\n": "v"}}),
    ("POST", "/execute/background", {"code": "print(1)", "working_dir": SURROGATE}),
    ("POST", "/execute/background", {"code": "print(1)", "name": SURROGATE}),
    ("POST", "/execute/background", {"code": "print(1)", "language": SURROGATE}),
    ("POST", "/commands/run", {"command": "echo " + SURROGATE}),
    ("POST", "/commands/run", {"command": "bash", "args": ["-c", SURROGATE]}),
    ("POST", "/commands/run", {"command": "ls", "working_dir": SURROGATE}),
    ("POST", "/commands/background", {"command": SURROGATE}),
    ("POST", "/commands/background", {"command": "ls", "env": {"B": "x" + SURROGATE}}),
    ("PUT", "/env", {"env_vars": {"A": SURROGATE}}),
    ("PATCH", "/env", {"env_vars": {"A\n": "v"}}),
    ("DELETE", "/execute/kill", {"process_id": SURROGATE}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "body"), AGENT_CASES)
async def test_bad_values_are_a_400_and_start_nothing(
    api: Api, sbx: Sandbox, method: str, path: str, body: dict[str, Any]
) -> None:
    answer = await api.agent(sbx, method, path, json=body)
    error = answer.expect_error(400, "INVALID_REQUEST")
    assert "'" in error["error"], "the message names the field"
    listed = await api.agent(sbx, "GET", "/execute/processes")
    assert listed.body["count"] == 0, "nothing was started"
    env = await api.agent(sbx, "GET", "/env")
    assert set(env.body["env_vars"]) == {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED"}, (
        "nothing was saved"
    )


async def _raw_http(base_url: str, request: bytes, *, wait: float = 30) -> tuple[int, Any]:
    """Send bytes as they are; read the whole answer (the server closes or says its length)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        status = int(head.split(b" ", 2)[1])
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        body = await asyncio.wait_for(
            reader.readexactly(length) if length is not None else reader.read(), wait
        )
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")
    finally:
        writer.close()


def _request(method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value", ["clé".encode(), "clé".encode("latin-1"), b"\xff\xfe", "k\u2028".encode()]
)
async def test_non_ascii_credentials_are_a_401(
    backend: LocalBackend, sbx: Sandbox, value: bytes
) -> None:
    cases = [
        ("/v1/sandboxes", {"X-API-Key": value}, "AUTHENTICATION_REQUIRED"),
        ("/v1/sandboxes", {"Authorization": b"Bearer " + value}, "AUTHENTICATION_REQUIRED"),
        (f"/sandboxes/{sbx.id}/execute/processes", {"Authorization": b"Bearer " + value}, None),
    ]
    for path, headers, code in cases:
        status, body = await _raw_http(backend.base_url, _request("GET", path, headers))
        assert status == 401, (path, status, body)
        assert isinstance(body, dict) and body["error"] and body["request_id"].startswith("req_")
        assert code is None or body["code"] == code


# -- what one client can hold ------------------------------------------------------------------


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
        markers = [f"hopx-test-{uuid.uuid4().hex}" for _ in range(2)]
        sessions = [aiohttp.ClientSession() for _ in range(2)]
        try:
            busy = [
                asyncio.ensure_future(
                    Api(s, backend.base_url, backend.api_key).agent(
                        sbx,
                        "POST",
                        "/execute",
                        json={"code": f"import time\n# {m}\ntime.sleep(100)", "timeout": 120},
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


# -- logging ------------------------------------------------------------------------------------


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


# -- a client that goes away ends its code -----------------------------------------------------


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
    marker = f"hopx-test-{uuid.uuid4().hex}"
    code = f"import time\n# {marker}\ntime.sleep(100)"
    if route == "/execute":
        body: dict[str, Any] = {"code": code, "timeout": 120}
    else:
        body = {"command": f"sleep 100; echo {marker}", "timeout": 120}
    request = asyncio.ensure_future(api.agent(sbx, "POST", route, json=body))
    await _until(lambda: _pids_with(marker), "started")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await _until(lambda: not _pids_with(marker), "ended")


# -- answer sizes -------------------------------------------------------------------------------


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
