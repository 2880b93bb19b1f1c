"""Bad input to the local backend: a 4xx with the documented body, never a 500, nothing saved.

What one client can hold (slow bodies, idle connections, clients that go away, answer
sizes): ``test_server_limits.py``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, _raw_http, _request

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
