"""``only=terminal`` on the process list: a long poll that only an ending wakes."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

LONG = "import time; time.sleep(60)"


async def test_health_advertises_list_terminal(api: Api, sbx: Sandbox) -> None:
    health = await api.agent(sbx, "GET", "/health")
    assert health.body["features"]["list_terminal"] is True


async def test_terminal_only_lists_endings_and_ignores_other_changes(
    api: Api, sbx: Sandbox
) -> None:
    version = (await api.agent(sbx, "GET", "/execute/processes")).body["version"]
    first = await api.background(sbx, LONG)
    # held for up to 30 s; only an ending may wake it, not queued -> running
    poll = asyncio.ensure_future(
        api.agent(sbx, "GET", f"/execute/processes?since={version}&wait=30&only=terminal")
    )
    second = await api.background(sbx, LONG)
    assert second["status"] == "running"
    listed = await api.agent(sbx, "GET", f"/execute/processes?since={version}&only=terminal")
    assert listed.body["processes"] == [], "nothing has ended yet"
    assert listed.body["version"] > version, "the counter moved all the same"
    assert not poll.done()
    await api.agent(sbx, "DELETE", "/execute/kill", json={"process_id": first["process_id"]})
    answer = await asyncio.wait_for(poll, 25)
    assert [p["process_id"] for p in answer.body["processes"]] == [first["process_id"]]
    assert answer.body["processes"][0]["status"] == "killed"
    # without the filter, every change is listed
    every = await api.agent(sbx, "GET", f"/execute/processes?since={version}")
    assert {p["process_id"] for p in every.body["processes"]} == {
        first["process_id"],
        second["process_id"],
    }


async def test_terminal_only_lists_earlier_endings(api: Api, sbx: Sandbox) -> None:
    """An ending before the request is listed at once (the wait is not needed)."""
    done = await api.background(sbx, "pass")
    ended = await api.wait_done(sbx, done["process_id"])
    answer = await api.agent(sbx, "GET", "/execute/processes?since=0&wait=1&only=terminal")
    assert [p["process_id"] for p in answer.body["processes"]] == [done["process_id"]]
    assert answer.body["processes"][0]["version"] == ended["version"]


@pytest.mark.parametrize("value", ["", "running", "TERMINAL"])
async def test_only_rejects_unknown_values(api: Api, sbx: Sandbox, value: str) -> None:
    answer = await api.agent(sbx, "GET", f"/execute/processes?since=0&only={value}")
    assert "only" in answer.expect_error(400, "INVALID_REQUEST")["error"]
