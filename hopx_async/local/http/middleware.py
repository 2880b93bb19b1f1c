"""Middleware the sub-apps share: rate limits, counted per key, with their headers."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import attrs
from aiohttp import web

from ..errors import ApiError

__all__ = ["Handler", "RateLimiter", "with_headers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class RateLimiter:
    """A fixed window per key (an API key, or a sandbox for its agent): one minute by default.

    ``X-RateLimit-Reset`` is the window's end rounded up to a whole second, so a client
    that sleeps until it is never refused again by the same window.
    """

    per_minute: int
    window: float = 60.0
    _windows: dict[str, tuple[float, int]] = attrs.Factory(dict)

    def hit(self, key: str) -> dict[str, str]:
        """Count one request for ``key``: its headers, or raise the 429 ``ApiError``."""
        now = time.time()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        allowed = count < self.per_minute
        if allowed:
            count += 1
        self._windows[key] = (start, count)
        reset = start + self.window
        headers = {
            "X-RateLimit-Limit": str(self.per_minute),
            "X-RateLimit-Remaining": str(max(0, self.per_minute - count)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        if not allowed:
            retry_after = max(1, math.ceil(reset - now))
            raise ApiError(
                429,
                "RATE_LIMIT_EXCEEDED",
                f"rate limit of {self.per_minute} requests per minute exceeded",
                extra={"retry_after": retry_after},
                headers={"Retry-After": str(retry_after), **headers},
            )
        return headers


async def with_headers(
    request: web.Request, handler: Handler, headers: dict[str, str]
) -> web.StreamResponse:
    """Answer ``request`` through ``handler`` with ``headers`` on the answer, an error too."""
    try:
        response = await handler(request)
    except ApiError as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response
