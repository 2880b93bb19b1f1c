"""Middleware the sub-apps share: rate limits, counted per key, with their headers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import attrs
from aiohttp import web

from ..errors import ApiError

__all__ = ["Handler", "RateLimiter", "with_headers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class RateLimiter:
    """A fixed one-minute window per key (an API key, or a sandbox for its agent)."""

    per_minute: int
    _windows: dict[str, tuple[float, int]] = attrs.Factory(dict)

    def hit(self, key: str) -> dict[str, str]:
        """Count one request for ``key``: its headers, or raise the 429 ``ApiError``."""
        now = time.time()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        allowed = count < self.per_minute
        if allowed:
            count += 1
        self._windows[key] = (start, count)
        reset = start + 60
        headers = {
            "X-RateLimit-Limit": str(self.per_minute),
            "X-RateLimit-Remaining": str(max(0, self.per_minute - count)),
            "X-RateLimit-Reset": str(int(reset)),
        }
        if not allowed:
            retry_after = max(1, int(reset - now + 0.999))
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
