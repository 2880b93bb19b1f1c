"""Retry decisions (no I/O): full jitter, and Retry-After in seconds or as an HTTP date."""

from __future__ import annotations

import email.utils

import pytest

from hopx_async import RetryPolicy
from hopx_async._retry import (
    MAX_ADVICE,
    backoff,
    parse_retry_after,
    should_retry_failure,
    should_retry_status,
)

NOW = 1_800_000_000.0


def test_backoff_draws_full_jitter_from_zero_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    assert [backoff(policy, n, None, uniform=uniform) for n in range(6)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
    ]
    assert all(low == 0.0 for low, _ in asked), "full jitter starts at zero"


def test_backoff_spreads_over_the_whole_range() -> None:
    delays = [backoff(RetryPolicy(initial_delay=1.0), 0, None) for _ in range(2000)]
    assert min(delays) < 0.1 and max(delays) > 0.9
    assert all(0.0 <= d <= 1.0 for d in delays)


def test_server_advice_wins_and_is_capped() -> None:
    assert backoff(RetryPolicy(), 3, 2.5) == 2.5
    assert backoff(RetryPolicy(), 0, 10_000.0) == MAX_ADVICE
    assert backoff(RetryPolicy(), 0, -1.0) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        (" 7 ", 7.0),
        ("-2", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after_as_seconds_or_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_only_safe_requests_retry_on_the_policy_statuses() -> None:
    policy = RetryPolicy(max_retries=2)
    assert should_retry_status(policy, 503, safe=True, attempt=0)
    assert not should_retry_status(policy, 503, safe=False, attempt=0)
    assert not should_retry_status(policy, 500, safe=True, attempt=0)
    assert not should_retry_status(policy, 429, safe=True, attempt=2)


def test_a_request_that_never_reached_the_server_is_always_retried() -> None:
    policy = RetryPolicy(max_retries=1)
    assert should_retry_failure(policy, reached=False, safe=False, attempt=0)
    assert not should_retry_failure(policy, reached=True, safe=False, attempt=0)
    assert should_retry_failure(policy, reached=True, safe=True, attempt=0)
    assert not should_retry_failure(policy, reached=False, safe=True, attempt=1)
