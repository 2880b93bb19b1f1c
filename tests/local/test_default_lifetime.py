"""A sandbox created without ``timeout_seconds``: the ``extended`` dialect gives it a default
lifetime (a notebook cell that fails before ``kill()`` does not leak it for good); ``hopx``
and ``openapi`` keep the service's documented behaviour, no auto-kill."""

from __future__ import annotations

import asyncio

import pytest

from hopx_async import AsyncHopx, SandboxNotFoundError
from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import SANDBOX_TIMEOUT, Dialect, sandbox_timeout_from_env


@pytest.mark.anyio
async def test_each_dialect_s_lifetime_without_a_timeout(
    dialect_client: AsyncHopx, dialect: str
) -> None:
    async with dialect_client.sandboxes.create() as sandbox:
        info = await sandbox.get_info()
        given = await dialect_client.sandboxes.create(timeout_seconds=120)
        try:
            assert (await given.get_info()).timeout_seconds == 120  # a given one always wins
        finally:
            await given.kill()
    if dialect == "extended":
        assert info.timeout_seconds == SANDBOX_TIMEOUT == 3600
        assert info.expires_at is not None and info.created_at is not None
        assert round((info.expires_at - info.created_at).total_seconds()) == SANDBOX_TIMEOUT
    else:
        assert info.timeout_seconds is None
        assert info.expires_at is None


@pytest.mark.anyio
async def test_the_default_lifetime_kills_the_sandbox() -> None:
    dialect = Dialect.named("extended", default_sandbox_timeout=1)
    async with (
        LocalBackend(dialect=dialect, isolation="none") as backend,
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url) as client,
    ):
        sandbox = await client.sandboxes.create()
        assert (await sandbox.get_info()).expires_at is not None

        async def watch() -> None:
            for _ in range(300):  # bounded: 30 s
                await sandbox.get_info()
                await asyncio.sleep(0.1)

        with pytest.raises(SandboxNotFoundError):  # deleted past its lifetime
            await watch()


def test_the_default_lifetime_is_configured_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sandbox_timeout_from_env() == SANDBOX_TIMEOUT
    monkeypatch.setenv("HOPX_LOCAL_SANDBOX_TIMEOUT", "600")
    assert Dialect.named("extended").default_sandbox_timeout == 600
    assert Dialect.named("hopx").default_sandbox_timeout is None
    for never in ("0", "none"):
        monkeypatch.setenv("HOPX_LOCAL_SANDBOX_TIMEOUT", never)
        assert Dialect.named("extended").default_sandbox_timeout is None
    monkeypatch.setenv("HOPX_LOCAL_SANDBOX_TIMEOUT", "1h")
    with pytest.raises(ValueError, match="HOPX_LOCAL_SANDBOX_TIMEOUT must be a whole number"):
        Dialect.named("extended")
