"""Configuration: where the key and URL come from, and that the key never leaks."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import warnings
from typing import Any

import pytest

from hopx_async import (
    DEFAULT_BASE_URL,
    AsyncHopx,
    AuthenticationError,
    ConfigurationError,
    Limits,
    NetworkError,
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


@pytest.mark.anyio
async def test_arguments_win_over_environment(
    monkeypatch: pytest.MonkeyPatch, backend: Any, proxy: Any
) -> None:
    monkeypatch.setenv("HOPX_API_KEY", "from-env")
    monkeypatch.setenv("HOPX_BASE_URL", "http://127.0.0.1:1/")
    sent: list[str | None] = []
    proxy.on_request = lambda request: sent.append(request.headers.get("X-API-Key"))
    async with AsyncHopx(api_key=backend.api_key, base_url=proxy.url) as client:
        assert client.base_url == proxy.url
        assert await client.sandboxes.list_templates()
    assert sent == [backend.api_key], "the argument's key, sent to the argument's URL"


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
async def test_unclosed_client_warns_with_its_origin() -> None:
    # nothing listens there: the session is opened, but no connection stays behind it
    client = AsyncHopx(
        api_key=SECRET, base_url="http://127.0.0.1:9", retries=RetryPolicy(max_retries=0)
    )
    # in a task of its own, so that no traceback of this frame keeps the session alive
    attempt = asyncio.ensure_future(client.sandboxes.get("sbx_1"))
    await asyncio.wait([attempt])
    assert isinstance(attempt.exception(), NetworkError)
    with warnings.catch_warnings(record=True) as caught:  # aiohttp's own warnings too
        warnings.simplefilter("always")
        del client, attempt
        gc.collect()
    ours = [w for w in caught if "unclosed AsyncHopx client" in str(w.message)]
    assert len(ours) == 1
    assert ours[0].category is ResourceWarning
    assert re.search(r"created at .*test_config\.py:\d+", str(ours[0].message))
