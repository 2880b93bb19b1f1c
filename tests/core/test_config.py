"""Configuration: where the key and URL come from, and that the key never leaks."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

from hopx_async import (
    DEFAULT_BASE_URL,
    AsyncHopx,
    AuthenticationError,
    ConfigurationError,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)

SECRET = "hopx_test_secret_key_123"


def test_missing_key_names_both_ways() -> None:
    with pytest.raises(ConfigurationError) as err:
        AsyncHopx()
    assert "api_key" in str(err.value)
    assert "HOPX_API_KEY" in str(err.value)


def test_key_and_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPX_API_KEY", SECRET)
    monkeypatch.setenv("HOPX_BASE_URL", "http://127.0.0.1:1234/")
    client = AsyncHopx()
    assert client.base_url == "http://127.0.0.1:1234"


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPX_API_KEY", "from-env")
    monkeypatch.setenv("HOPX_BASE_URL", "http://127.0.0.1:1/")
    client = AsyncHopx(api_key=SECRET, base_url="http://127.0.0.1:2")
    assert client.base_url == "http://127.0.0.1:2"
    assert client._api_key == SECRET


def test_default_base_url_is_the_service() -> None:
    assert AsyncHopx(api_key=SECRET).base_url == DEFAULT_BASE_URL == "https://api.hopx.dev"


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        AsyncHopx(api_key=SECRET, base_url="ftp://example")


def test_repr_hides_the_key() -> None:
    client = AsyncHopx(api_key=SECRET, base_url="http://127.0.0.1:9")
    assert SECRET not in repr(client)
    assert SECRET not in str(vars(client).get("sandboxes"))


def test_config_objects_are_frozen_and_validated() -> None:
    t = Timeouts(request=5)
    with pytest.raises(AttributeError):
        t.request = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="request"):
        Timeouts(request=0)
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0)
    assert PollPolicy().initial_interval < PollPolicy().max_interval
    assert "request=5" in repr(t)


@pytest.mark.anyio
async def test_key_never_logged_or_in_errors(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hopx_async")
    async with AsyncHopx(api_key=SECRET, base_url=backend.base_url) as client:
        with pytest.raises(AuthenticationError) as err:
            await client.sandboxes.get("sbx_does_not_exist")
    assert SECRET not in str(err.value)
    assert SECRET not in repr(err.value.__dict__)
    assert caplog.records, "debug logging of requests is expected"
    assert all(SECRET not in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_unclosed_client_warns_with_its_origin(backend: Any) -> None:
    client = AsyncHopx(api_key=backend.api_key, base_url=backend.base_url)
    async for _ in client.sandboxes.list(limit=1):
        pass
    session = client._transport._session
    del client
    with pytest.warns(ResourceWarning, match=r"test_config\.py:\d+"):
        gc.collect()
    assert session is not None
    await session.close()  # tidy up what the test deliberately leaked
