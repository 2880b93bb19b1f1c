"""docs/wire.md, section 2 (control plane), over real HTTP."""

from __future__ import annotations

import asyncio
import datetime
import time

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, eventually, marker, pids_with_arg

pytestmark = pytest.mark.anyio

SANDBOX_FIELDS = {
    "id",
    "object",
    "status",
    "public_host",
    "direct_url",
    "template_id",
    "template_name",
    "organization_id",
    "region",
    "resources",
    "internet_access",
    "timeout_seconds",
    "expires_at",
    "created_at",
    "updated_at",
}


def parse_iso(text: str) -> datetime.datetime:
    assert text.endswith("Z"), text
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def pid_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


async def eventual_state(pid: int, wanted: str) -> str:
    """The state of ``pid`` once it is ``wanted`` (a process in D acts on signals later)."""
    deadline = time.monotonic() + 3
    while (state := pid_state(pid)) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return state


async def test_create_returns_every_documented_field(api: Api, backend: LocalBackend) -> None:
    answer = await api.cp(
        "POST",
        "/v1/sandboxes",
        json={"template_name": "code-interpreter", "env_vars": {"A": "1"}, "region": "eu"},
    )
    assert answer.status == 201
    data = answer.body
    assert SANDBOX_FIELDS | {"auth_token", "token_expires_at"} <= set(data)
    assert data["object"] == "sandbox"
    assert data["status"] == "running"
    assert data["id"].startswith("sbx_")
    assert data["public_host"] == f"{backend.base_url}/sandboxes/{data['id']}"
    assert isinstance(data["template_id"], str)
    assert data["template_name"] == "code-interpreter"
    assert data["region"] == "eu"
    assert set(data["resources"]) == {"vcpu", "memory_mb", "disk_mb"}
    assert data["internet_access"] is True
    assert data["timeout_seconds"] == 3600  # the extended dialect's default lifetime
    assert parse_iso(data["expires_at"]) > parse_iso(data["created_at"])
    parse_iso(data["created_at"])
    assert parse_iso(data["token_expires_at"]) > datetime.datetime.now(datetime.timezone.utc)
    await api.cp("DELETE", f"/v1/sandboxes/{data['id']}")


async def test_create_by_template_id_and_base_template(api: Api) -> None:
    base = await api.cp("POST", "/v1/sandboxes", json={"template_name": "base"})
    assert base.status == 201
    by_id = await api.cp(
        "POST",
        "/v1/sandboxes",
        json={"template_id": base.body["template_id"], "timeout_seconds": 60},
    )
    assert by_id.status == 201
    assert by_id.body["template_name"] == "base"
    assert by_id.body["timeout_seconds"] == 60
    assert parse_iso(by_id.body["expires_at"]) > parse_iso(by_id.body["created_at"])
    for sandbox in (base.body, by_id.body):
        await api.cp("DELETE", f"/v1/sandboxes/{sandbox['id']}")


async def test_create_errors(api: Api) -> None:
    unknown = await api.cp("POST", "/v1/sandboxes", json={"template_name": "no-such-template"})
    assert "code-interpreter" in unknown.expect_error(404, "RESOURCE_NOT_FOUND")["error"]
    missing = await api.cp("POST", "/v1/sandboxes", json={})
    assert "template_name" in missing.expect_error(400, "INVALID_REQUEST")["error"]
    bad_bodies = {
        "timeout_seconds": {"template_name": "base", "timeout_seconds": "soon"},
        "internet_access": {"template_name": "base", "internet_access": "yes"},
        "env_vars": {"template_name": "base", "env_vars": ["A=1"]},
        "region": {"template_name": "base", "region": 5},
        "template_name": {"template_name": 7},
    }
    for field, body in bad_bodies.items():
        answer = await api.cp("POST", "/v1/sandboxes", json=body)
        assert field in answer.expect_error(400, "INVALID_REQUEST")["error"]
    not_json = await api.cp("POST", "/v1/sandboxes", data=b"{template")
    not_json.expect_error(400, "INVALID_REQUEST")
    not_object = await api.cp("POST", "/v1/sandboxes", json=[1, 2])
    not_object.expect_error(400, "INVALID_REQUEST")


async def test_authentication_and_origin(api: Api, backend: LocalBackend) -> None:
    url = backend.base_url + "/v1/sandboxes"
    (await api.raw("GET", url)).expect_error(401, "AUTHENTICATION_REQUIRED")
    wrong = await api.raw("GET", url, headers={"X-API-Key": "wrong"})
    wrong.expect_error(401, "AUTHENTICATION_REQUIRED")
    bearer = await api.raw("GET", url, headers={"Authorization": f"Bearer {backend.api_key}"})
    assert bearer.status == 200
    browser = await api.cp("GET", "/v1/sandboxes", headers={"Origin": "http://evil.example"})
    browser.expect_error(403, "FORBIDDEN")
    assert "Access-Control-Allow-Origin" not in browser.headers
    preflight = await api.raw("OPTIONS", url, headers={"Origin": "http://evil.example"})
    preflight.expect_error(403, "FORBIDDEN")
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert backend.api_key not in repr(backend)


async def test_get_and_not_found(api: Api, sbx: Sandbox) -> None:
    got = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
    assert got.status == 200
    assert SANDBOX_FIELDS | {"auth_token", "token_expires_at"} <= set(got.body)
    assert got.body["id"] == sbx.id
    missing = await api.cp("GET", "/v1/sandboxes/sbx_nope")
    missing.expect_error(404, "RESOURCE_NOT_FOUND")
    for method, path in [
        ("DELETE", ""),
        ("POST", "/kill"),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/token/refresh"),
    ]:
        (await api.cp(method, f"/v1/sandboxes/sbx_nope{path}")).expect_error(
            404, "RESOURCE_NOT_FOUND"
        )
    unknown_route = await api.cp("GET", "/v1/nothing-here")
    unknown_route.expect_error(404, "NOT_FOUND")


async def test_list_pagination_and_filters(api: Api) -> None:
    created = [await api.create(region="pagination-test") for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2&region=pagination-test" + (f"&cursor={cursor}" if cursor else "")
        answer = await api.cp("GET", "/v1/sandboxes" + query)
        assert answer.status == 200
        page = answer.body
        assert page["object"] == "list"
        assert set(page) >= {"data", "has_more", "next_cursor"}
        assert len(page["data"]) <= 2
        for item in page["data"]:
            assert set(item) >= SANDBOX_FIELDS
        seen.extend(item["id"] for item in page["data"])
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == [s.id for s in created]
    status_filter = await api.cp("GET", "/v1/sandboxes?status=paused&region=pagination-test")
    assert status_filter.body["data"] == []
    (await api.cp("GET", "/v1/sandboxes?limit=0")).expect_error(400, "INVALID_REQUEST")
    (await api.cp("GET", "/v1/sandboxes?limit=x")).expect_error(400, "INVALID_REQUEST")
    (await api.cp("GET", "/v1/sandboxes?cursor=%%%")).expect_error(400, "INVALID_REQUEST")
    for s in created:
        await api.cp("DELETE", f"/v1/sandboxes/{s.id}")


async def test_delete_and_kill_end_processes(api: Api) -> None:
    for path, expected in [("", {"status": "deleted"}), ("/kill", {"status": "killed"})]:
        sbx = await api.create()
        started = await api.command(sbx, "sleep 60")
        proc = await api.process(sbx, started["process_id"])
        method = "DELETE" if path == "" else "POST"
        answer = await api.cp(method, f"/v1/sandboxes/{sbx.id}{path}")
        assert answer.status == 200
        assert answer.body == {**expected, "id": sbx.id}
        assert not pid_alive(proc["pid"])
        (await api.cp("GET", f"/v1/sandboxes/{sbx.id}")).expect_error(404, "RESOURCE_NOT_FOUND")
        gone = await api.agent(sbx, "GET", "/execute/processes")
        gone.expect_error(404, "RESOURCE_NOT_FOUND")


async def test_pause_and_resume(api: Api, sbx: Sandbox) -> None:
    # No shell: dash would vfork sleep, and a vfork parent whose child is stopped shows "D".
    arg = marker()
    started = await api.command(sbx, "sleep", args=["30", arg])
    assert await eventually(lambda: bool(pids_with_arg(arg)))
    (pid,) = pids_with_arg(arg)  # the sandbox's own process (inside its box, if any)
    paused = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/pause")
    assert paused.status == 200
    assert paused.body == {"id": sbx.id, "status": "paused"}
    assert await eventual_state(pid, "T") == "T"
    refused = await api.agent(sbx, "GET", "/execute/processes")
    assert "paused" in refused.expect_error(409, "CONFLICT")["error"]
    info = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
    assert info.body["status"] == "paused"
    resumed = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/resume")
    assert resumed.body == {"id": sbx.id, "status": "running"}
    assert await eventual_state(pid, "S") == "S"
    assert (await api.agent(sbx, "GET", "/execute/processes")).status == 200
    await api.agent(sbx, "POST", f"/execute/kill/{started['process_id']}")


async def test_paused_time_does_not_count_against_a_process_timeout(api: Api, sbx: Sandbox) -> None:
    arg = marker()
    started = await api.command(sbx, f"sleep 1 {arg}; echo finished", timeout=2)
    assert await eventually(lambda: bool(pids_with_arg(arg)))
    assert (await api.cp("POST", f"/v1/sandboxes/{sbx.id}/pause")).status == 200
    # Paused longer than the whole timeout: it must not count.
    await asyncio.sleep(2.5)
    assert (await api.cp("POST", f"/v1/sandboxes/{sbx.id}/resume")).status == 200
    done = await api.wait_done(sbx, started["process_id"])
    assert done["status"] == "completed", done
    assert done["stdout"] == "finished\n"


async def test_set_timeout_deletes_sandbox_at_expiry(api: Api) -> None:
    sbx = await api.create()
    started = await api.command(sbx, "sleep 60")
    pid = (await api.process(sbx, started["process_id"]))["pid"]
    answer = await api.cp("PUT", f"/v1/sandboxes/{sbx.id}/timeout", json={"timeout_seconds": 1})
    assert answer.status == 200
    assert answer.body["id"] == sbx.id
    assert answer.body["timeout_seconds"] == 1
    expires = parse_iso(answer.body["expires_at"])
    assert expires > datetime.datetime.now(datetime.timezone.utc)
    for bad in ({}, {"timeout_seconds": 0}, {"timeout_seconds": "1"}):
        wrong = await api.cp("PUT", f"/v1/sandboxes/{sbx.id}/timeout", json=bad)
        assert "timeout_seconds" in wrong.expect_error(400, "INVALID_REQUEST")["error"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
        if got.status == 404:
            break
        await asyncio.sleep(0.1)
    assert got.status == 404
    assert not pid_alive(pid)


async def test_token_refresh(api: Api, sbx: Sandbox) -> None:
    answer = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/token/refresh")
    assert answer.status == 200
    assert answer.body["auth_token"] != sbx.token
    parse_iso(answer.body["token_expires_at"])
    fresh = Sandbox({**sbx.data, "auth_token": answer.body["auth_token"]})
    assert (await api.agent(fresh, "GET", "/health")).status == 200


async def test_templates(api: Api) -> None:
    listed = await api.cp("GET", "/v1/templates")
    assert listed.status == 200
    assert listed.body["object"] == "list"
    names = {t["name"] for t in listed.body["data"]}
    assert {"code-interpreter", "base"} <= names
    for template in listed.body["data"]:
        assert {"id", "name", "display_name", "language", "is_active"} <= set(template)
    one = await api.cp("GET", "/v1/templates/code-interpreter")
    assert one.body["name"] == "code-interpreter"
    assert one.body["language"] == "python"
    (await api.cp("GET", "/v1/templates/nope")).expect_error(404, "RESOURCE_NOT_FOUND")


async def test_rate_limit() -> None:
    async with LocalBackend(rate_limit_per_minute=3) as limited, aiohttp.ClientSession() as s:
        api = Api(s, limited.base_url, limited.api_key)
        answers = [await api.cp("GET", "/v1/sandboxes") for _ in range(4)]
        assert [a.status for a in answers[:3]] == [200, 200, 200]
        for a in answers:
            assert a.headers["X-RateLimit-Limit"] == "3"
            assert int(a.headers["X-RateLimit-Reset"]) > time.time() - 1
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        body = answers[3].expect_error(429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= body["retry_after"] <= 60
        assert answers[3].headers["Retry-After"] == str(body["retry_after"])


async def test_unlimited_by_default(api: Api) -> None:
    answer = await api.cp("GET", "/v1/templates")
    assert "X-RateLimit-Limit" not in answer.headers
