"""What the HTTP parts share: the app state, JSON answers, bodies, bearer tokens, rate limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from aiohttp import web

from ._catalog import Catalog
from ._errors import ApiError
from ._launch import Isolation
from ._processes import Processes
from ._render import Renderer
from ._sandboxes import Sandboxes
from ._tokens import TokenSigner
from ._validate import read_json_body

__all__ = [
    "STATE",
    "AppState",
    "Handler",
    "RateLimiter",
    "bearer",
    "json_answer",
    "read_body",
    "state",
    "to_the_end",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


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


@attrs.frozen
class AppState:
    """Everything the route handlers need."""

    sandboxes: Sandboxes
    processes: Processes
    renderer: Renderer
    catalog: Catalog
    signer: TokenSigner
    isolation: Isolation
    api_key: str
    limiter: RateLimiter | None


STATE = web.AppKey("state", AppState)


def state(request: web.Request) -> AppState:
    return request.config_dict[STATE]


def json_answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body, read within the server's read deadline."""
    return await read_json_body(request)


async def to_the_end(work: Awaitable[_T]) -> _T:
    """Finish ``work`` even if the client goes away (its handler is cancelled then).

    For what would leave state behind if stopped half-way: a start, a deletion.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an error nobody waits for any more is not worth a warning


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
