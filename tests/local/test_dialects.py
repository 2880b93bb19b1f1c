"""The strict dialects over raw HTTP: the undocumented form is refused, the documented works.

Each test names the row of docs/wire.md section 13 it holds, so that the strictness of
``hopx`` and ``openapi`` cannot erode silently. ``extended`` is the rest of the suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import ERROR_EXIT_CODE, Dialect, dialect_from

from .helpers import Api, Sandbox
from .receiver import Receiver

pytestmark = pytest.mark.anyio

STRICT = ("hopx", "openapi")


def _backend(dialect: Dialect) -> Iterator[LocalBackend]:
    with LocalBackend.in_thread(dialect=dialect, isolation="none") as backend:
        yield backend


@pytest.fixture(scope="module")
def hopx_backend() -> Iterator[LocalBackend]:
    yield from _backend(Dialect.named("hopx", boot_seconds=0))


@pytest.fixture(scope="module")
def openapi_backend() -> Iterator[LocalBackend]:
    yield from _backend(Dialect.named("openapi", boot_seconds=0))


@pytest.fixture(params=STRICT)
def strict(
    request: pytest.FixtureRequest, hopx_backend: LocalBackend, openapi_backend: LocalBackend
) -> LocalBackend:
    return hopx_backend if request.param == "hopx" else openapi_backend


@pytest.fixture
async def sapi(strict: LocalBackend) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, strict.base_url, strict.api_key)


@pytest.fixture
async def ssbx(sapi: Api) -> AsyncIterator[Sandbox]:
    sandbox = await sapi.create()
    yield sandbox
    await sapi.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")


async def _ended(api: Api, sbx: Sandbox, process_id: str) -> dict[str, Any]:
    for _ in range(200):
        listed = await api.agent(sbx, "GET", "/execute/processes")
        by_id = {p["process_id"]: p for p in listed.body["processes"]}
        proc = by_id[process_id]
        if proc["status"] not in ("queued", "running"):
            return dict(proc)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{process_id} did not end")


def _name(backend: LocalBackend) -> str:
    return backend.dialect.name


def test_dialect_names_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dialect_from(None).name == "extended"
    monkeypatch.setenv("HOPX_LOCAL_DIALECT", "openapi")
    assert dialect_from(None).name == "openapi"
    assert LocalBackend().dialect.name == "openapi"
    with pytest.raises(ValueError, match="extended, hopx, openapi"):
        Dialect.named("lenient")
    hopx = Dialect.named("hopx")  # the documented defaults
    assert (hopx.control_rate_per_minute, hopx.agent_rate_per_minute) == (100, 300)
    assert hopx.create_rate_per_minute == 20
    assert hopx.rate_window_seconds == 60
    assert Dialect.named("extended").rate_limited is False


async def test_c10_health_names_the_dialect_and_limits_only_in_extended(
    sapi: Api, strict: LocalBackend, backend: LocalBackend, api: Api
) -> None:
    answer = await sapi.raw("GET", strict.base_url + "/health")
    assert answer.body["dialect"] == _name(strict)
    assert "limits" not in answer.body
    extended = await api.raw("GET", backend.base_url + "/health")
    assert extended.body["dialect"] == "extended"
    assert "limits" in extended.body


async def test_a1_a5_no_features_and_no_extension_routes(sapi: Api, ssbx: Sandbox) -> None:
    health = await sapi.agent(ssbx, "GET", "/health")
    assert health.status == 200
    assert health.body == {"status": "healthy", "version": health.body["version"]}
    started = await sapi.background(ssbx, "print(1)", name="n")
    pid = started["process_id"]
    for method, path in [
        ("GET", f"/execute/processes/{pid}"),
        ("DELETE", f"/execute/processes/{pid}"),
        ("GET", f"/execute/processes/{pid}/stream"),
    ]:
        miss = await sapi.agent(ssbx, method, path)
        assert miss.status in (404, 405), (method, path, miss.status)
        assert isinstance(miss.body, str)  # Go's plain text: a route miss, not a resource's
    # extension query parameters are ignored, not served
    listed = await sapi.agent(ssbx, "GET", "/execute/processes?since=999999&wait=5&only=x")
    assert listed.status == 200
    assert pid in {p["process_id"] for p in listed.body["processes"]}
    assert "version" not in listed.body


async def test_a3_background_answer_and_no_idempotency(sapi: Api, ssbx: Sandbox) -> None:
    headers = {"Idempotency-Key": "k-1"}
    one = await sapi.agent(
        ssbx, "POST", "/execute/background", json={"code": "pass"}, headers=headers
    )
    two = await sapi.agent(
        ssbx, "POST", "/execute/background", json={"code": "pass"}, headers=headers
    )
    assert set(one.body) == {"process_id", "execution_id", "status"}
    assert one.body["process_id"] != two.body["process_id"]
    missing = await sapi.agent(ssbx, "POST", "/execute/background", json={"cod": "pass"})
    assert missing.status == 400
    assert "'code'" in missing.body["error"]


async def test_a4_process_shapes(sapi: Api, ssbx: Sandbox, strict: LocalBackend) -> None:
    started = await sapi.background(ssbx, "print('out')", unknown_field=[1, 2])
    proc = await _ended(sapi, ssbx, started["process_id"])
    if _name(strict) == "hopx":
        assert set(proc) == {
            "process_id", "execution_id", "name", "status", "language", "started_at",
            "completed_at", "exit_code", "execution_time", "stdout", "stderr",
        }  # fmt: skip
        assert proc["stdout"] == "out\n"
    else:
        assert set(proc) == {
            "process_id", "execution_id", "name", "status", "language", "pid", "start_time",
            "end_time", "duration", "exit_code",
        }  # fmt: skip
    assert proc["status"] == "completed"


async def test_a4_openapi_running_process_has_no_end(sapi: Api, ssbx: Sandbox) -> None:
    started = await sapi.background(ssbx, "import time; time.sleep(30)")
    listed = await sapi.agent(ssbx, "GET", "/execute/processes")
    (proc,) = [p for p in listed.body["processes"] if p["process_id"] == started["process_id"]]
    await sapi.agent(ssbx, "DELETE", f"/execute/kill?process_id={started['process_id']}")
    if "start_time" in proc:
        assert not {"end_time", "duration", "exit_code"} & set(proc)
    else:
        assert proc["completed_at"] is None
        assert proc["exit_code"] is None


async def test_a6_kill_forms(sapi: Api, ssbx: Sandbox, strict: LocalBackend) -> None:
    openapi = _name(strict) == "openapi"

    async def sleeper() -> str:
        return str((await sapi.background(ssbx, "import time; time.sleep(30)"))["process_id"])

    pid = await sleeper()
    body_only = await sapi.agent(ssbx, "DELETE", "/execute/kill", json={"process_id": pid})
    if openapi:
        assert body_only.status == 400
        assert "'process_id' is required" in body_only.body["error"]
    else:
        assert body_only.status == 200, body_only.body
        assert body_only.body["status"] == "killed"
    pid = await sleeper()
    by_path = await sapi.agent(ssbx, "POST", f"/execute/kill/{pid}")
    assert by_path.status == (404 if openapi else 200)
    undocumented = await sapi.agent(ssbx, "POST", f"/processes/{pid}/kill")
    assert undocumented.status == 404
    assert isinstance(undocumented.body, str)
    by_query = await sapi.agent(ssbx, "DELETE", f"/execute/kill?process_id={pid}")
    if openapi:
        assert by_query.status == 200
        assert by_query.body["status"] == "killed"
    else:  # killed by path already
        by_query.expect_error(404, "RESOURCE_NOT_FOUND")
    unknown = await sapi.agent(ssbx, "DELETE", "/execute/kill?process_id=proc_nope")
    unknown.expect_error(404, "RESOURCE_NOT_FOUND")


async def test_a2_a3_working_directory_keys(sapi: Api, ssbx: Sandbox, strict: LocalBackend) -> None:
    await sapi.agent(ssbx, "POST", "/files/mkdir", json={"path": "/workspace/sub"})
    code = "import os; print(os.getcwd())"
    for key in ("workdir", "working_dir"):
        ran = await sapi.agent(ssbx, "POST", "/execute", json={"code": code, key: "/workspace/sub"})
        honoured = key == "workdir" or _name(strict) == "hopx"
        assert ran.body["stdout"].strip().endswith("sub") is honoured, (key, ran.body)
    # background code has no working-directory field: it runs in the workspace
    started = await sapi.background(ssbx, code, workdir="/workspace/sub")
    proc = await _ended(sapi, ssbx, started["process_id"])
    if "stdout" in proc:
        assert not proc["stdout"].strip().endswith("sub")


async def test_a7_commands(sapi: Api, ssbx: Sandbox, strict: LocalBackend) -> None:
    official = {"command": "bash", "args": ["-c", "echo hi; echo err >&2"], "workdir": "/workspace"}
    ok = await sapi.agent(ssbx, "POST", "/commands/run", json=official)
    assert ok.status == 200
    assert ok.body["stdout"] == "hi\n"
    assert ok.body["stderr"] == "err\n"
    assert ok.body["exit_code"] == 0
    failing = await sapi.agent(
        ssbx, "POST", "/commands/run", json={"command": "bash", "args": ["-c", "echo x; exit 3"]}
    )
    alone = await sapi.agent(ssbx, "POST", "/commands/run", json={"command": "echo shell"})
    if _name(strict) == "hopx":
        assert failing.status == 500  # the docs: a non-zero exit is a 500 with the output
        assert failing.body == {"stdout": "x\n", "stderr": "", "exit_code": 3}
        assert alone.status == 200
        assert alone.body["stdout"] == "shell\n"
    else:
        assert failing.status == 200
        assert failing.body["exit_code"] == 3
        assert failing.body["success"] is False
        assert alone.body["exit_code"] != 0  # one program name, no shell: cannot start


async def test_a10_a11_env_as_given(sapi: Api, ssbx: Sandbox) -> None:
    put = await sapi.agent(
        ssbx, "PUT", "/env", json={"env_vars": {"API_KEY": "s3cret", "PLAIN": "1"}}
    )
    assert put.status == 204
    shown = await sapi.agent(ssbx, "GET", "/env")
    assert shown.body["env_vars"]["API_KEY"] == "***MASKED***"
    # what GET showed, PUT back: the mask is stored as the value
    await sapi.agent(ssbx, "PUT", "/env", json={"env_vars": shown.body["env_vars"]})
    ran = await sapi.agent(
        ssbx, "POST", "/execute", json={"code": "import os; print(os.environ['API_KEY'])"}
    )
    assert ran.body["stdout"] == "***MASKED***\n"
    await sapi.agent(ssbx, "PATCH", "/env", json={"env_vars": {"ONLY": "1"}})
    replaced = await sapi.agent(ssbx, "GET", "/env")
    assert "PLAIN" not in replaced.body["env_vars"]  # PATCH without merge: replace
    await sapi.agent(ssbx, "PATCH", "/env", json={"env_vars": {"MORE": "2"}, "merge": True})
    merged = await sapi.agent(ssbx, "GET", "/env")
    assert {"ONLY", "MORE"} <= set(merged.body["env_vars"])
    deleted = await sapi.agent(ssbx, "DELETE", "/env", json={"keys": ["ONLY"]})
    assert deleted.status == 204
    cleared = await sapi.agent(ssbx, "GET", "/env")
    assert not {"ONLY", "MORE"} & set(cleared.body["env_vars"])  # every variable cleared


async def test_c1_create_env_vars_are_not_applied(sapi: Api) -> None:
    sbx = await sapi.create(env_vars={"FROM_CREATE": "yes"})
    try:
        ran = await sapi.agent(
            sbx,
            "POST",
            "/execute",
            json={"code": "import os; print(os.environ.get('FROM_CREATE'))"},
        )
        assert ran.body["stdout"] == "None\n"
    finally:
        await sapi.cp("DELETE", f"/v1/sandboxes/{sbx.id}")


async def test_c3_list_limits_and_cursor(sapi: Api, ssbx: Sandbox, strict: LocalBackend) -> None:
    too_many = await sapi.cp("GET", "/v1/sandboxes?limit=101")
    assert too_many.status == 400
    page = await sapi.cp("GET", "/v1/sandboxes?limit=100")
    assert page.status == 200
    assert "has_more" in page.body
    assert ("next_cursor" in page.body) is (_name(strict) == "hopx")


async def test_x5_bad_token_has_no_invalid_token_code(
    sapi: Api, ssbx: Sandbox, strict: LocalBackend
) -> None:
    answer = await sapi.raw(
        "GET", ssbx.host + "/execute/processes", headers={"Authorization": "Bearer nope.nope"}
    )
    assert answer.status == 401
    assert answer.body.get("code") == (None if _name(strict) == "hopx" else "UNAUTHORIZED")


async def test_x3_paused_agent_is_unreachable(sapi: Api, ssbx: Sandbox) -> None:
    assert (await sapi.cp("POST", f"/v1/sandboxes/{ssbx.id}/pause")).status == 200
    answer = await sapi.agent(ssbx, "GET", "/execute/processes")
    assert answer.status == 502
    assert isinstance(answer.body, str)
    assert (await sapi.cp("POST", f"/v1/sandboxes/{ssbx.id}/resume")).status == 200
    assert (await sapi.agent(ssbx, "GET", "/execute/processes")).status == 200


async def test_x6_error_status_on_demand(sapi: Api, ssbx: Sandbox) -> None:
    code = f"import sys; sys.exit({ERROR_EXIT_CODE})"
    started = await sapi.background(ssbx, code)
    assert (await _ended(sapi, ssbx, started["process_id"]))["status"] == "error"


async def test_a14_async_answer_has_no_process_id(
    sapi: Api, ssbx: Sandbox, strict: LocalBackend
) -> None:
    async with Receiver() as receiver:
        body = {"code": "print(1)", "callback_url": f"{receiver.url}/h"}
        body["callback_signature_secret"] = "sec"
        answer = await sapi.agent(ssbx, "POST", "/execute/async", json=body)
        if _name(strict) == "openapi":
            assert answer.status == 404
            return
        assert set(answer.body) == {"execution_id", "status", "callback_url"}
        (hit,) = await receiver.hits_to("/h", 1)
    signed = hit.headers["X-HOPX-Timestamp"].encode() + hit.body
    digest = hmac.new(b"sec", signed, hashlib.sha256).hexdigest()
    assert hit.headers["X-HOPX-Signature"] == f"sha256={digest}"
    assert json.loads(hit.body)["execution_id"] == answer.body["execution_id"]


async def test_x4_booting_agent_and_x2_rate_limits() -> None:
    dialect = Dialect.named(
        "hopx", boot_seconds=0.5, agent_rate_per_minute=5, create_rate_per_minute=2,
        rate_window_seconds=2.0,
    )  # fmt: skip
    backend = LocalBackend(dialect=dialect, isolation="none")
    async with backend, aiohttp.ClientSession() as session:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        seen = {(await api.agent(sbx, "GET", "/health")).status for _ in range(3)}
        assert seen == {502, 404, 401}
        await asyncio.sleep(0.5)
        answers = [await api.agent(sbx, "GET", "/health") for _ in range(6)]
        assert [a.status for a in answers] == [200] * 5 + [429]
        refused = answers[-1]
        assert refused.body["code"] == "RATE_LIMIT_EXCEEDED"
        assert refused.body["retry_after"] >= 1
        reset = int(refused.headers["X-RateLimit-Reset"])
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        # sleeping until Reset is enough: it is never rounded down
        await asyncio.sleep(max(0.0, reset - time.time()))
        assert (await api.agent(sbx, "GET", "/health")).status == 200
        await api.create()  # the window of the first creation has ended: two more
        await api.create()
        third = await api.cp("POST", "/v1/sandboxes", json={"template_name": "code-interpreter"})
        assert third.status == 429
        assert math.isfinite(float(third.headers["Retry-After"]))


async def test_a13_stream_without_complete() -> None:
    dialect = Dialect.named("hopx", boot_seconds=0, stream_complete=False)
    backend = LocalBackend(dialect=dialect, isolation="none")
    async with backend, aiohttp.ClientSession() as session:
        sbx = await Api(session, backend.base_url, backend.api_key).create()
        url = sbx.host.replace("http", "ws", 1) + "/execute/stream"
        headers = {"Authorization": f"Bearer {sbx.token}"}
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.send_json({"type": "execute", "code": "print('s')"})
            frames = [json.loads(msg.data) async for msg in ws]
    types = [frame["type"] for frame in frames]
    assert types[-1] == "result"
    assert "complete" not in types
