"""docs/wire.md, section 3 (a sandbox's agent), over real HTTP."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
from typing import Any

import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, eventually, marker, pids_with_arg

pytestmark = pytest.mark.anyio

PROCESS_FIELDS = {
    "process_id",
    "execution_id",
    "name",
    "status",
    "language",
    "started_at",
    "completed_at",
    "stdout",
    "stderr",
    "exit_code",
    "execution_time",
    "timeout",
    "pid",
    "version",
    "stdout_truncated",
    "stderr_truncated",
}


def is_iso_z(text: str) -> bool:
    assert text.endswith("Z"), text
    datetime.datetime.fromisoformat(text[:-1] + "+00:00")
    return True


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def test_health_and_features(api: Api, sbx: Sandbox) -> None:
    answer = await api.agent(sbx, "GET", "/health")
    assert answer.status == 200
    assert answer.body["status"] == "healthy"
    assert isinstance(answer.body["version"], str)
    assert answer.body["features"] == {
        "process_get": True,
        "output_offsets": True,
        "process_delete": True,
        "long_poll": True,
        "list_since": True,
        "idempotency_keys": True,
        "output_push": True,
        "execute_stream": True,
        "env_delete_keys": True,
        "list_terminal": True,
        "background_workdir": True,
    }


async def test_agent_tokens(api: Api, sbx: Sandbox) -> None:
    other = await api.create()
    try:
        url = sbx.host + "/health"
        (await api.raw("GET", url)).expect_error(401, "AUTHENTICATION_REQUIRED")
        garbage = await api.raw("GET", url, headers={"Authorization": "Bearer nonsense"})
        garbage.expect_error(401, "INVALID_TOKEN")
        forged = sbx.token[:-2] + ("AA" if not sbx.token.endswith("AA") else "BB")
        tampered = await api.raw("GET", url, headers={"Authorization": f"Bearer {forged}"})
        tampered.expect_error(401, "INVALID_TOKEN")
        api_key = await api.raw("GET", url, headers={"Authorization": f"Bearer {api.api_key}"})
        api_key.expect_error(401, "INVALID_TOKEN")
        cross = await api.raw("GET", url, headers={"Authorization": f"Bearer {other.token}"})
        assert cross.status in (401, 403)
        cross.expect_error(403, "FORBIDDEN")
        browser = await api.agent(sbx, "GET", "/health", headers={"Origin": "https://x.example"})
        browser.expect_error(403, "FORBIDDEN")
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")


async def test_expired_token_is_invalid_then_refresh_works() -> None:
    import aiohttp

    async with LocalBackend(token_ttl_seconds=2) as short, aiohttp.ClientSession() as s:
        api = Api(s, short.base_url, short.api_key)
        sbx = await api.create()
        assert (await api.agent(sbx, "GET", "/health")).status == 200
        for _ in range(100):  # a bounded wait for the expiry
            answer = await api.agent(sbx, "GET", "/health")
            if answer.status != 200:
                break
            await asyncio.sleep(0.1)
        answer.expect_error(401, "INVALID_TOKEN")
        fresh = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/token/refresh")
        renewed = Sandbox({**sbx.data, "auth_token": fresh.body["auth_token"]})
        assert (await api.agent(renewed, "GET", "/health")).status == 200


async def test_execute_synchronous(api: Api, sbx: Sandbox) -> None:
    ok = await api.agent(sbx, "POST", "/execute", json={"code": "print(6 * 7)"})
    assert ok.status == 200
    assert set(ok.body) >= {"success", "stdout", "stderr", "exit_code", "execution_time"}
    assert ok.body["success"] is True
    assert ok.body["stdout"] == "42\n"
    assert ok.body["exit_code"] == 0
    assert isinstance(ok.body["execution_time"], float)
    bad = await api.agent(
        sbx, "POST", "/execute", json={"code": "import sys; print('no', file=sys.stderr); exit(3)"}
    )
    assert bad.body["success"] is False
    assert bad.body["exit_code"] == 3
    assert bad.body["stderr"] == "no\n"
    bash = await api.agent(
        sbx, "POST", "/execute", json={"code": "echo $((2+3))", "language": "bash"}
    )
    assert bash.body["stdout"] == "5\n"
    slow = await api.agent(
        sbx,
        "POST",
        "/execute",
        json={"code": "echo start; sleep 30", "language": "bash", "timeout": 1},
    )
    assert slow.status == 200, "a timeout is a result, as the service answers it"
    assert slow.body["success"] is False
    assert slow.body["exit_code"] == 124
    assert slow.body["stdout"] == "start\n"
    assert slow.body["stderr"].endswith(
        "execution timed out after 1 second; its process group was killed\n"
    )
    unknown = await api.agent(sbx, "POST", "/execute", json={"code": "x", "language": "cobol"})
    message = unknown.expect_error(400, "INVALID_REQUEST")["error"]
    assert "python" in message
    assert "bash" in message
    too_long = await api.agent(sbx, "POST", "/execute", json={"code": "1", "timeout": 301})
    assert "timeout" in too_long.expect_error(400, "INVALID_REQUEST")["error"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_javascript(api: Api, sbx: Sandbox) -> None:
    answer = await api.agent(
        sbx, "POST", "/execute", json={"code": "console.log(1 + 1)", "language": "javascript"}
    )
    assert answer.body["stdout"] == "2\n"


async def test_working_dir_both_keys_and_confinement(
    api: Api, sbx: Sandbox, backend: LocalBackend
) -> None:
    code = "import os; print(os.getcwd())"
    root = await api.agent(sbx, "POST", "/execute", json={"code": code})
    workspace = root.body["stdout"].strip()
    host_workspace = str(backend.state_dir / "sandboxes" / sbx.id / "workspace")
    # In a box the workspace is the real path /workspace; without one, the host path.
    assert workspace == ("/workspace" if backend.isolation == "bubblewrap" else host_workspace)
    for key in ("working_dir", "workdir"):
        for given, expected in [
            ("/workspace", workspace),
            ("/workspace/sub/dir", os.path.join(workspace, "sub", "dir")),
            ("rel", os.path.join(workspace, "rel")),
            ("/workspace/a/../b", os.path.join(workspace, "b")),
        ]:
            answer = await api.agent(sbx, "POST", "/execute", json={"code": code, key: given})
            assert answer.body["stdout"].strip() == expected, (key, given)
        for outside in ("/etc", "/", "../x", "/workspace/../etc", "/workspacex"):
            answer = await api.agent(sbx, "POST", "/execute", json={"code": code, key: outside})
            assert "working_dir" in answer.expect_error(400, "INVALID_REQUEST")["error"]
            started = await api.agent(
                sbx, "POST", "/execute/background", json={"code": code, key: outside}
            )
            started.expect_error(400, "INVALID_REQUEST")
    os.symlink("/etc", os.path.join(host_workspace, "escape"))
    link = await api.agent(
        sbx, "POST", "/execute", json={"code": code, "working_dir": "/workspace/escape"}
    )
    link.expect_error(400, "INVALID_REQUEST")


async def test_process_environment_is_minimal(api: Api, sbx: Sandbox) -> None:
    os.environ["HOPX_LOCAL_SERVER_ONLY"] = "leak"
    try:
        await api.agent(sbx, "PUT", "/env", json={"env_vars": {"SBX": "s", "BOTH": "sandbox"}})
        code = (
            "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
            "['HOPX_LOCAL_SERVER_ONLY', 'SBX', 'BOTH', 'REQ', 'HOME', 'LANG', 'PATH']}))"
        )
        answer = await api.agent(
            sbx, "POST", "/execute", json={"code": code, "env": {"REQ": "r", "BOTH": "request"}}
        )
        import json

        seen = json.loads(answer.body["stdout"])
        assert seen["HOPX_LOCAL_SERVER_ONLY"] is None
        assert seen["SBX"] == "s"
        assert seen["REQ"] == "r"
        assert seen["BOTH"] == "request"
        assert seen["HOME"].endswith("/workspace")
        assert seen["LANG"]
        assert seen["PATH"]
    finally:
        del os.environ["HOPX_LOCAL_SERVER_ONLY"]


async def test_background_lifecycle_and_fields(api: Api, sbx: Sandbox) -> None:
    started = await api.background(sbx, "import time; print('hello'); time.sleep(0.3)", name="job")
    assert set(started) >= {"process_id", "execution_id", "status", "name", "language", "timeout"}
    assert started["process_id"].startswith("proc_")
    assert started["execution_id"].startswith("exec_")
    assert started["status"] in ("queued", "running")
    assert started["name"] == "job"
    assert started["language"] == "python"
    assert started["timeout"] == 300
    listed = await api.agent(sbx, "GET", "/execute/processes")
    assert listed.status == 200
    assert listed.body["count"] == len(listed.body["processes"])
    (running,) = [p for p in listed.body["processes"] if p["process_id"] == started["process_id"]]
    assert set(running) >= PROCESS_FIELDS
    assert running["status"] == "running"
    assert running["completed_at"] is None
    assert running["exit_code"] is None
    is_iso_z(running["started_at"])
    done = await api.wait_done(sbx, started["process_id"])
    assert done["status"] == "completed"
    assert done["exit_code"] == 0
    assert done["stdout"] == "hello\n"
    assert done["stdout_truncated"] is False
    assert is_iso_z(done["completed_at"])
    assert 0.25 < done["execution_time"] < 5
    assert done["version"] > running["version"]


async def test_failed_statuses(api: Api, sbx: Sandbox) -> None:
    exit_two = await api.background(sbx, "import sys; sys.exit(2)")
    missing = await api.command(sbx, "no-such-program-hopx", args=["x"])
    first = await api.wait_done(sbx, exit_two["process_id"])
    assert first["status"] == "failed"
    assert first["exit_code"] == 2
    second = await api.wait_done(sbx, missing["process_id"])
    assert second["status"] == "failed"
    assert "no-such-program-hopx" in second["stderr"]
    assert second["completed_at"] is not None


async def test_timeout_ends_the_whole_group(api: Api, sbx: Sandbox) -> None:
    child = marker()
    started = await api.command(
        sbx, f"sleep 60 {child} & echo child $!; trap '' TERM; sleep 60; echo never", timeout=1
    )
    assert await eventually(lambda: bool(pids_with_arg(child)))
    proc = await api.process(sbx, started["process_id"])
    done = await api.wait_done(sbx, started["process_id"])
    assert done["status"] == "timeout"
    assert "timed out after 1 second" in done["stderr"]
    assert "never" not in done["stdout"]
    assert pids_with_arg(child) == []
    assert not pid_alive(proc["pid"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/execute/kill"), ("POST", "/execute/kill/{}"), ("POST", "/processes/{}/kill")],
)
async def test_kill_forms(api: Api, sbx: Sandbox, method: str, path: str) -> None:
    child = marker()
    started = await api.command(sbx, f"sleep 60 {child} & echo $!; trap '' TERM; wait")
    assert await eventually(lambda: bool(pids_with_arg(child)))
    proc = await api.process(sbx, started["process_id"])
    body = {"process_id": started["process_id"]} if "{}" not in path else None
    url = path.format(started["process_id"])
    answer = await api.agent(sbx, method, url, json=body)
    assert answer.status == 200
    assert answer.body["process_id"] == started["process_id"]
    assert answer.body["status"] == "killed"
    assert answer.body["message"]
    assert not pid_alive(proc["pid"])
    assert pids_with_arg(child) == []
    after = await api.process(sbx, started["process_id"])
    assert after["status"] == "killed"
    again = await api.agent(sbx, method, url, json=body)
    again.expect_error(404, "PROCESS_NOT_FOUND")
    unknown_body = {"process_id": "proc_nope"} if body else None
    unknown = await api.agent(sbx, method, path.format("proc_nope"), json=unknown_body)
    unknown.expect_error(404, "PROCESS_NOT_FOUND")


async def test_kill_requires_process_id(api: Api, sbx: Sandbox) -> None:
    answer = await api.agent(sbx, "DELETE", "/execute/kill", json={})
    assert "process_id" in answer.expect_error(400, "INVALID_REQUEST")["error"]


async def test_commands_run_both_shapes(api: Api, sbx: Sandbox) -> None:
    plain = await api.agent(
        sbx,
        "POST",
        "/commands/run",
        json={"command": "echo hi; pwd", "working_dir": "/workspace/c"},
    )
    assert plain.status == 200
    assert set(plain.body) >= {"stdout", "stderr", "exit_code", "execution_time"}
    lines = plain.body["stdout"].splitlines()
    assert lines[0] == "hi"
    assert lines[1].endswith("/workspace/c")
    sdk = await api.agent(
        sbx,
        "POST",
        "/commands/run",
        json={"command": "bash", "args": ["-c", "echo $0 >&2; exit 4"], "workdir": "/workspace"},
    )
    assert sdk.body["exit_code"] == 4
    assert sdk.body["stderr"] == "bash\n"
    (await api.agent(sbx, "POST", "/commands/run", json={})).expect_error(400, "INVALID_REQUEST")


async def test_commands_background_both_shapes(api: Api, sbx: Sandbox) -> None:
    plain = await api.command(sbx, "echo plain; pwd", working_dir="sub", name="p")
    sdk = await api.command(sbx, "bash", args=["-c", "echo sdk; pwd"], workdir="/workspace/other")
    assert plain["language"] == "bash"
    assert plain["command"] == "echo plain; pwd"
    assert sdk["command"] == "echo sdk; pwd"
    first = await api.wait_done(sbx, plain["process_id"])
    second = await api.wait_done(sbx, sdk["process_id"])
    assert first["stdout"].splitlines()[0] == "plain"
    assert first["stdout"].splitlines()[1].endswith("/workspace/sub")
    assert second["stdout"].splitlines()[1].endswith("/workspace/other")
    listed = await api.agent(sbx, "GET", "/execute/processes")
    ids = {p["process_id"] for p in listed.body["processes"]}
    assert {plain["process_id"], sdk["process_id"]} <= ids
    assert all(p["command"] for p in listed.body["processes"] if p["language"] == "bash")


async def test_env_endpoints(api: Api, sbx: Sandbox) -> None:
    put = await api.agent(
        sbx, "PUT", "/env", json={"env_vars": {"PLAIN": "1", "API_KEY": "sk-1", "DB_PASSWORD": "x"}}
    )
    assert put.status == 204
    got = await api.agent(sbx, "GET", "/env")
    base = {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED"}
    shown = {k: v for k, v in got.body["env_vars"].items() if k not in base}
    assert shown == {"PLAIN": "1", "API_KEY": "***MASKED***", "DB_PASSWORD": "***MASKED***"}
    assert got.body["count"] == 7
    patch = await api.agent(sbx, "PATCH", "/env", json={"env_vars": {"MORE": "2"}, "merge": True})
    assert patch.status == 204
    assert set((await api.agent(sbx, "GET", "/env")).body["env_vars"]) - base == {
        "PLAIN",
        "API_KEY",
        "DB_PASSWORD",
        "MORE",
    }
    run = await api.agent(sbx, "POST", "/commands/run", json={"command": "echo $API_KEY"})
    assert run.body["stdout"] == "sk-1\n"
    one = await api.agent(sbx, "DELETE", "/env", json={"keys": ["MORE"]})
    assert one.status == 204
    assert "MORE" not in (await api.agent(sbx, "GET", "/env")).body["env_vars"]
    everything = await api.agent(sbx, "DELETE", "/env")
    assert everything.status == 204
    assert set((await api.agent(sbx, "GET", "/env")).body["env_vars"]) == base
    bad = await api.agent(sbx, "PUT", "/env", json={"env_vars": {"A": 1}})
    assert "env_vars" in bad.expect_error(400, "INVALID_REQUEST")["error"]
    (await api.agent(sbx, "PATCH", "/env", json={})).expect_error(400, "INVALID_REQUEST")


async def test_os_process_list(api: Api, sbx: Sandbox) -> None:
    empty = await api.agent(sbx, "GET", "/processes")
    assert empty.body == {"processes": [], "count": 0}
    started = await api.command(sbx, "sleep 30")

    async def listed() -> list[dict[str, Any]]:
        for _ in range(200):  # the box may still be starting: wait for the command
            answer = await api.agent(sbx, "GET", "/processes")
            if any("sleep 30" in p["command"] for p in answer.body["processes"]):
                break
            await asyncio.sleep(0.02)
        return list(answer.body["processes"])

    found = await listed()
    assert found
    for item in found:
        assert {"pid", "command", "user"} <= set(item)
        assert "bwrap" not in item["command"]  # the box itself is not the sandbox's
    assert any("sleep 30" in p["command"] for p in found)
    await api.agent(sbx, "POST", f"/execute/kill/{started['process_id']}")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": 5}, "code"),
        ({"code": "1", "timeout": "x"}, "timeout"),
        ({"code": "1", "timeout": -1}, "timeout"),
        ({"code": "1", "timeout": True}, "timeout"),
        ({"code": "1", "env": ["A"]}, "env"),
        ({"code": "1", "env": {"A": 1}}, "env"),
        ({"code": "1", "language": 5}, "language"),
        ({"code": "1", "working_dir": 5}, "working_dir"),
        ({"code": "1", "name": ["n"]}, "name"),
    ],
)
async def test_bad_background_input_is_400(
    api: Api, sbx: Sandbox, body: dict[str, object], field: str
) -> None:
    answer = await api.agent(sbx, "POST", "/execute/background", json=body)
    assert field in answer.expect_error(400, "INVALID_REQUEST")["error"]


async def test_bad_json_and_unknown_route(api: Api, sbx: Sandbox) -> None:
    for path in ("/execute", "/execute/background", "/commands/run", "/commands/background"):
        answer = await api.agent(sbx, "POST", path, data=b"not json")
        answer.expect_error(400, "INVALID_REQUEST")
        answer = await api.agent(sbx, "POST", path, data=b"[]")
        answer.expect_error(400, "INVALID_REQUEST")
        answer = await api.agent(sbx, "POST", path, data=b"[" * 100_000)
        answer.expect_error(400, "INVALID_REQUEST")
    for body in ({"command": "echo \x00"}, {"command": "bash", "args": ["-c", "\x00"]}):
        answer = await api.agent(sbx, "POST", "/commands/background", json=body)
        assert "command" in answer.expect_error(400, "INVALID_REQUEST")["error"]
    (await api.agent(sbx, "GET", "/no/such/route")).expect_error(404, "NOT_FOUND")
    wrong_method = await api.agent(sbx, "PUT", "/execute/processes")
    wrong_method.expect_error(405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        (
            "python",
            "#" + "x" * 40_000 + "\nimport os; print('long', os.getcwd())",
            "long /",
        ),
        ("bash", "#" + "x" * 40_000 + "\necho long $(pwd)", "long /"),
    ],
)
async def test_code_longer_than_a_command_line(
    api: Api, sbx: Sandbox, language: str, code: str, expected: str
) -> None:
    # Past 32 Ki characters the code goes through a file (Python: on stdin), not argv.
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "language": language})
    assert answer.status == 200, answer.body
    assert answer.body["stdout"].startswith(expected), answer.body
    assert answer.body["exit_code"] == 0
