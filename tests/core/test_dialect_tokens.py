"""Tokens and timestamps as the service renders them (issue 16, item 12; docs/wire.md 13.4
X5, X7, 13.2 C8).

The strict dialects are not merged yet: the fault proxy answers the ``hopx`` dialect's 401
(no ``code``) and the ``openapi`` one's (``UNAUTHORIZED``). The timestamp parser is tested
directly, with ``datetime.fromisoformat`` made unavailable, so it holds on every Python.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hopx_async import AuthenticationError, _fields
from hopx_async._fields import parse_iso_time, parse_time

from .proxy import Fault, FaultProxy, fast_client

UTC = timezone.utc


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body", [{"error": "Unauthorized"}, {"error": "Unauthorized", "code": "UNAUTHORIZED"}]
)
async def test_any_agent_401_refreshes_once(
    backend: Any, proxy: FaultProxy, body: dict[str, str]
) -> None:
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        await sbx.run_code("print(1)")
        proxy.inject(Fault("GET", r"/execute/processes$", 401, body))
        assert await sbx.list_processes() == []
        assert proxy.count("POST", "/v1/sandboxes/{sbx}/token/refresh") == 1


@pytest.mark.anyio
async def test_a_second_401_is_raised(backend: Any, proxy: FaultProxy) -> None:
    async with fast_client(backend, proxy.url) as client, client.sandboxes.create("base") as sbx:
        await sbx.run_code("print(1)")
        proxy.inject(Fault("GET", r"/execute/processes$", 401, {"error": "no"}, times=2))
        with pytest.raises(AuthenticationError):
            await sbx.list_processes()
        assert proxy.count("POST", "/v1/sandboxes/{sbx}/token/refresh") == 1, "refresh once"


class _NoIsoformat(datetime):
    @classmethod
    def fromisoformat(cls, date_string: str) -> Any:
        raise AssertionError("fromisoformat is version-dependent and must not be used")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T17:08:05.123456789Z", datetime(2026, 12, 2, 17, 8, 5, 123456, UTC)),
        ("2026-12-02T17:08:05.1Z", datetime(2026, 12, 2, 17, 8, 5, 100000, UTC)),
        ("2026-12-02T17:08:05.1234567Z", datetime(2026, 12, 2, 17, 8, 5, 123456, UTC)),
        ("2026-12-02T17:08:05Z", datetime(2026, 12, 2, 17, 8, 5, tzinfo=UTC)),
        ("2026-12-02t17:08:05z", datetime(2026, 12, 2, 17, 8, 5, tzinfo=UTC)),
        ("2026-12-02T17:08:05", datetime(2026, 12, 2, 17, 8, 5, tzinfo=UTC)),
        (
            "2026-12-02T17:08:05.000000001+02:00",
            datetime(2026, 12, 2, 17, 8, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2026-12-02T17:08:05.5-0530",
            datetime(2026, 12, 2, 17, 8, 5, 500000, timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2026-12-02 17:08:05.25+00", datetime(2026, 12, 2, 17, 8, 5, 250000, UTC)),
        ("2026-02-30T00:00:00Z", None),
        ("2026-12-02T17:08:05+24:00", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_iso_time_any_fraction(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: datetime | None
) -> None:
    monkeypatch.setattr(_fields, "datetime", _NoIsoformat)
    assert parse_iso_time(text) == expected
    if expected is not None:
        assert parse_time(text) == expected


def test_parse_time_numbers_and_junk() -> None:
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(True) is None and parse_time(None) is None and parse_time([]) is None
