"""Retries: safe requests survive faults; a POST that starts something is never repeated.

The faults are injected by a proxy in front of the real local backend (see proxy.py),
because a real server cannot produce a 503 burst or a dropped connection on demand.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    NetworkError,
    RetryPolicy,
    ServiceUnavailableError,
)

from .proxy import Fault, FaultProxy, fast_client

pytestmark = pytest.mark.anyio

UNAVAILABLE = {"error": "try later", "code": "SERVICE_UNAVAILABLE", "request_id": "req_f"}


async def test_get_survives_a_503_burst(backend: Any, proxy: FaultProxy) -> None:
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        await sbx.run_code("print(1)")  # readiness done
        fault = proxy.inject(Fault("GET", r"/execute/processes$", 503, UNAVAILABLE, times=3))
        before = proxy.count("GET", "/execute/processes")
        assert await sbx.list_processes() == []
        assert fault.hits == 3
        assert proxy.count("GET", "/execute/processes") - before == 4


async def test_get_gives_up_after_max_retries(backend: Any, proxy: FaultProxy) -> None:
    async with fast_client(backend, proxy.url, retries=2) as client:
        proxy.inject(Fault("GET", r"/v1/sandboxes/", 503, UNAVAILABLE, times=10))
        with pytest.raises(ServiceUnavailableError) as err:
            await client.sandboxes.get("sbx_x")
        assert err.value.request_id == "req_f"
        assert proxy.count("GET", "/v1/sandboxes/{sbx}") == 3


async def test_dropped_connection_on_get_is_retried(backend: Any, proxy: FaultProxy) -> None:
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        proxy.inject(Fault("GET", r"/v1/sandboxes/sbx_", 0, times=1))
        assert (await sbx.get_info()).id == sbx.id


async def test_retry_after_is_honoured(
    backend: Any, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The body's retry_after, the Retry-After header in seconds and as an HTTP date."""
    caplog.set_level(logging.DEBUG, logger="hopx_async")
    async with fast_client(backend, proxy.url) as client:
        proxy.inject(
            Fault("GET", r"/v1/templates", 429, {"error": "slow", "retry_after": 0.05}, times=1)
        )
        proxy.inject(
            Fault("GET", r"/v1/templates", 503, {"error": "x"}, {"Retry-After": "0.07"}, times=1)
        )
        past = "Wed, 21 Oct 2015 07:28:00 GMT"  # a date already past: retry at once
        proxy.inject(Fault("GET", r"/v1/templates", 503, {"error": "x"}, {"Retry-After": past}))
        assert await client.sandboxes.list_templates()
    advice = [
        r.getMessage().rsplit("server advice: ", 1)[1].rstrip(")")
        for r in caplog.records
        if "server advice" in r.getMessage()
    ]
    assert advice == ["0.05s", "0.07s", "0s"]


async def test_start_that_reached_the_server_is_not_repeated(backend: Any) -> None:
    """Without idempotency keys, a 503 after the server started the process is raised."""
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        fast_client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sbx,
    ):
        proxy.inject(Fault("POST", r"/execute/background$", 503, UNAVAILABLE, after=True))
        with pytest.raises(ServiceUnavailableError):
            await sbx.run_code_background("print('once')", name="once")
        assert proxy.count("POST", "/execute/background") == 1
        started = await sbx.list_processes(name="once")
        assert len(started) == 1, "exactly one process was started"


async def test_start_with_idempotency_key_is_retried_safely(
    backend: Any, proxy: FaultProxy
) -> None:
    """The local backend honours Idempotency-Key: the retry returns the first process."""
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        keys: list[str | None] = []
        proxy.on_request = lambda r: keys.append(r.headers.get("Idempotency-Key"))
        proxy.inject(Fault("POST", r"/execute/background$", 503, UNAVAILABLE, after=True))
        proc = await sbx.run_code_background("print('once')", name="idem")
        assert proxy.count("POST", "/execute/background") == 2
        posted = [k for k in keys if k and k.startswith("idem_")]
        assert len(posted) == 2 and posted[0] == posted[1], "the same key on both attempts"
        started = await sbx.list_processes(name="idem")
        assert [p.process_id for p in started] == [proc.id]
        assert (await proc.wait()).stdout == "once\n"


async def test_post_refused_before_the_server_is_not_retried(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        fast_client(backend, proxy.url) as client,
        client.sandboxes.create("base") as sbx,
    ):
        proxy.inject(Fault("POST", r"/execute/background$", 503, UNAVAILABLE, times=5))
        with pytest.raises(ServiceUnavailableError):
            await sbx.run_code_background("print(1)")
        assert proxy.count("POST", "/execute/background") == 1


async def test_connection_refused_is_a_network_error() -> None:
    async with AsyncHopx(
        api_key="k",
        base_url="http://127.0.0.1:9",
        retries=RetryPolicy(max_retries=1, initial_delay=0.01),
    ) as client:
        with pytest.raises(NetworkError, match="cannot connect"):
            await client.sandboxes.get("sbx_1")
