"""Retry decisions, with no I/O: which failures retry, how long to wait, and rate limits.

* Safe requests (GET, DELETE, and POSTs the server deduplicates) retry on the policy's
  statuses (429, 502, 503, 504) and on connection errors.
* Any other request retries only when it provably never reached the server.
* The delay before retry ``n`` is drawn with full jitter, ``uniform(0, cap)`` where
  ``cap = min(max_delay, initial_delay * 2**n)``, unless the server said how long to wait:
  ``Retry-After`` (seconds or an HTTP date) or a ``retry_after`` body field.

>>> from hopx_async import RetryPolicy
>>> backoff(RetryPolicy(), 0, advice=3.0)
3.0
>>> parse_retry_after("120")
120.0
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable

from ._config import RetryPolicy
from ._ratelimit import RESET_MARGIN, RateState

__all__ = [
    "MAX_ADVICE",
    "RESET_MARGIN",
    "RateState",
    "backoff",
    "parse_retry_after",
    "should_retry_failure",
    "should_retry_status",
]

#: the longest a server's Retry-After advice is followed, in seconds
MAX_ADVICE = 60.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    ``now`` is the current Unix time (default ``time.time()``). A date in the past means 0.

    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff(
    policy: RetryPolicy,
    attempt: int,
    advice: float | None,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds before retry ``attempt`` (0-based): the server's advice, else full jitter.

    >>> backoff(RetryPolicy(initial_delay=1.0), 2, None, uniform=lambda lo, hi: hi)
    4.0
    >>> backoff(RetryPolicy(initial_delay=1.0), 2, None, uniform=lambda lo, hi: lo)
    0.0
    """
    if advice is not None:
        return min(max(0.0, advice), MAX_ADVICE)
    cap = min(policy.max_delay, policy.initial_delay * (2**attempt))
    return uniform(0.0, cap)


def should_retry_status(policy: RetryPolicy, status: int, *, safe: bool, attempt: int) -> bool:
    """Whether an error answer ``status`` to attempt ``attempt`` (0-based) is retried.

    A 429 is retried even for a request that is not safe (a start, a create): the server
    refused it unprocessed.
    """
    return (safe or status == 429) and status in policy.statuses and attempt < policy.max_retries


def should_retry_failure(policy: RetryPolicy, *, reached: bool, safe: bool, attempt: int) -> bool:
    """Whether a request that got no answer is retried.

    ``reached=False`` when the connection was never opened: the server cannot have seen
    the request, so even a start is sent again. Otherwise only a safe request is.
    """
    return attempt < policy.max_retries and (safe or not reached)
