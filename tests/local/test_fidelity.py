"""Answers that match the service: the base environment, a timed-out run, token refreshes."""

from __future__ import annotations

import datetime

import pytest

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

BASE = {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED"}


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_env_shows_the_base_environment_with_secrets_masked(api: Api, sbx: Sandbox) -> None:
    fresh = (await api.agent(sbx, "GET", "/env")).body
    assert set(fresh["env_vars"]) == BASE
    assert fresh["count"] == len(BASE)
    run = await api.agent(sbx, "POST", "/commands/run", json={"command": "echo $PATH"})
    assert run.body["stdout"] == fresh["env_vars"]["PATH"] + "\n", "what runs is what is shown"
    await api.agent(sbx, "PATCH", "/env", json={"env_vars": {"API_TOKEN": "s3cret", "X": "1"}})
    shown = (await api.agent(sbx, "GET", "/env")).body["env_vars"]
    assert shown["API_TOKEN"] == "***MASKED***"
    assert shown["X"] == "1"


async def test_putting_back_what_get_showed_keeps_secrets(api: Api, sbx: Sandbox) -> None:
    await api.agent(sbx, "PUT", "/env", json={"env_vars": {"API_KEY": "sk-1", "GONE": "x"}})
    shown = dict((await api.agent(sbx, "GET", "/env")).body["env_vars"])
    del shown["GONE"]  # how the official SDK deletes one variable: PUT the rest back
    assert (await api.agent(sbx, "PUT", "/env", json={"env_vars": shown})).status == 204
    run = await api.agent(sbx, "POST", "/commands/run", json={"command": "echo $API_KEY-$GONE"})
    assert run.body["stdout"] == "sk-1-\n", "the masked value did not replace the secret"
    await api.agent(sbx, "DELETE", "/env")
    assert set((await api.agent(sbx, "GET", "/env")).body["env_vars"]) == BASE


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/execute", {"code": "echo begun; echo warn >&2; sleep 30", "language": "bash"}),
        ("/commands/run", {"command": "echo begun; echo warn >&2; sleep 30"}),
    ],
)
async def test_a_synchronous_timeout_is_a_failed_result(
    api: Api, sbx: Sandbox, path: str, body: dict[str, str]
) -> None:
    answer = await api.agent(sbx, "POST", path, json={**body, "timeout": 1})
    assert answer.status == 200, answer.body
    assert answer.body["success"] is False
    assert answer.body["exit_code"] == 124
    assert answer.body["stdout"] == "begun\n"
    lines = answer.body["stderr"].splitlines()
    assert lines[0] == "warn"
    assert lines[-1] == (
        "hopx-local: execution timed out after 1 second; its process group was killed"
    )


async def test_a_refreshed_token_expires_strictly_later(api: Api, sbx: Sandbox) -> None:
    last = _when(sbx.data["token_expires_at"])
    for _ in range(3):  # within one second: whole-second expiries would tie
        fresh = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/token/refresh")
        assert fresh.status == 200, fresh.body
        expires = _when(fresh.body["token_expires_at"])
        assert expires > last
        last = expires
        renewed = Sandbox({**sbx.data, "auth_token": fresh.body["auth_token"]})
        assert (await api.agent(renewed, "GET", "/health")).status == 200
