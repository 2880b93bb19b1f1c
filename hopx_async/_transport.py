"""HTTP transport: one aiohttp session per client, retries, rate limits and error mapping.

The retry policy lives here and only here:

* GET and DELETE (``safe=True``) are retried on the policy's statuses (429, 502, 503, 504)
  and on connection errors, with full-jitter exponential backoff that yields to the
  server's ``Retry-After`` header or ``retry_after`` body field.
* Any other request is retried only when it provably never reached the server (the
  connection could not be opened). A POST that starts something is never sent twice.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import attrs
from multidict import CIMultiDictProxy

from ._config import Limits, RetryPolicy, Timeouts
from ._errors import (
    NetworkError,
    RateLimitError,
    RequestTimeoutError,
    error_from_response,
)
from ._version import __version__

logger = logging.getLogger("hopx_async")

USER_AGENT = f"hopx-async/{__version__}"


@attrs.frozen
class Response:
    """A decoded answer: status, headers and the JSON body (or text when not JSON)."""

    status: int
    headers: CIMultiDictProxy[str]
    data: Any

    @property
    def mapping(self) -> Mapping[str, Any]:
        """The body when it is a JSON object, else an empty mapping."""
        return self.data if isinstance(self.data, Mapping) else {}

    @property
    def request_id(self) -> str | None:
        return self.headers.get("X-Request-ID")


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _RateState:
    """What the server said of a scope's rate limit (X-RateLimit-* headers)."""

    __slots__ = ("limit", "remaining", "reset")

    def __init__(self) -> None:
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float | None = None

    def update(self, headers: Mapping[str, str]) -> None:
        try:
            if "X-RateLimit-Limit" in headers:
                self.limit = int(headers["X-RateLimit-Limit"])
            if "X-RateLimit-Remaining" in headers:
                self.remaining = int(headers["X-RateLimit-Remaining"])
            if "X-RateLimit-Reset" in headers:
                self.reset = float(headers["X-RateLimit-Reset"])
        except ValueError:
            pass

    def delay(self) -> float:
        """Seconds to hold the next request: until the reset when nothing remains."""
        if self.remaining is not None and self.remaining <= 0 and self.reset is not None:
            return max(0.0, min(60.0, self.reset - time.time()))
        return 0.0


class Transport:
    """Owns the client's one aiohttp session and sends every request."""

    def __init__(self, *, timeouts: Timeouts, limits: Limits, retries: RetryPolicy) -> None:
        self.timeouts = timeouts
        self.limits = limits
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rates: dict[str, _RateState] = {}
        self.closed = False

    @property
    def opened(self) -> bool:
        """Whether a session exists that must still be closed."""
        return self._session is not None and not self._session.closed

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed:
            if loop is not self._loop:
                raise RuntimeError(
                    "this HopX client is bound to another event loop; create one client per "
                    "event loop (hopx_sync clients run their own loop for you)"
                )
            return self._session
        if self.closed:
            raise RuntimeError("this HopX client is closed")
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections,
            limit_per_host=self.limits.max_connections_per_host,
            keepalive_timeout=self.limits.keepalive_expiry,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(
                total=self.timeouts.request, connect=self.timeouts.connect
            ),
        )
        self._loop = loop
        return self._session

    async def aclose(self, *, final: bool = True) -> None:
        """Close the session; unless ``final``, the next request opens a new one."""
        self.closed = self.closed or final
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def rate_state(self, scope: str) -> _RateState:
        state = self._rates.get(scope)
        if state is None:
            state = self._rates[scope] = _RateState()
        return state

    def min_interval(self, scope: str) -> float:
        """The shortest polling interval that stays within half the scope's rate limit."""
        state = self._rates.get(scope)
        if state is None or not state.limit:
            return 0.0
        return 2 * 60.0 / state.limit

    def backoff(self, attempt: int, advice: float | None) -> float:
        """Seconds before retry ``attempt`` (0-based): server advice, else full jitter."""
        if advice is not None:
            return min(advice, 60.0) + random.uniform(0, 0.05)
        cap = min(self.retries.max_delay, self.retries.initial_delay * (2**attempt))
        return random.uniform(cap / 2, cap)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        params: Mapping[str, str] | None = None,
        safe: bool | None = None,
        timeout: float | None = None,
        scope: str = "",
        resource: str | None = None,
    ) -> Response:
        """Send one logical request, retrying as the policy allows; raise on error answers.

        ``safe`` defaults to True for GET and DELETE. ``timeout`` overrides the request
        deadline (long polls). ``scope`` keys rate-limit bookkeeping (one per sandbox).
        """
        if safe is None:
            safe = method in ("GET", "DELETE", "HEAD")
        session = self._get_session()
        rate = self.rate_state(scope)
        client_timeout = (
            aiohttp.ClientTimeout(total=timeout, connect=self.timeouts.connect)
            if timeout is not None
            else None
        )
        attempt = 0
        while True:
            hold = rate.delay()
            if hold > 0:
                await asyncio.sleep(hold)
            try:
                kwargs: dict[str, Any] = {"headers": headers}
                if json is not None:
                    kwargs["data"] = jsonlib.dumps(json)
                    kwargs["headers"] = {**headers, "Content-Type": "application/json"}
                if params:
                    kwargs["params"] = params
                if client_timeout is not None:
                    kwargs["timeout"] = client_timeout
                async with session.request(method, url, **kwargs) as resp:
                    raw = await resp.read()
                    status = resp.status
                    resp_headers = resp.headers
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The connection was never opened: the server cannot have seen the request.
                if attempt < self.retries.max_retries:
                    delay = self.backoff(attempt, None)
                    logger.debug(
                        "%s %s: cannot connect (%s); retry in %.2fs", method, url, exc, delay
                    )
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                raise NetworkError(f"{method} {url}: cannot connect: {exc}") from exc
            except asyncio.TimeoutError as exc:
                if safe and attempt < self.retries.max_retries:
                    attempt += 1
                    await asyncio.sleep(self.backoff(attempt - 1, None))
                    continue
                deadline = timeout if timeout is not None else self.timeouts.request
                raise RequestTimeoutError(
                    f"{method} {url}: no answer within {deadline:g}s"
                ) from exc
            except aiohttp.ClientError as exc:
                if safe and attempt < self.retries.max_retries:
                    delay = self.backoff(attempt, None)
                    logger.debug("%s %s: %s; retry in %.2fs", method, url, exc, delay)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                raise NetworkError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

            rate.update(resp_headers)
            data = _decode(raw, resp_headers.get("Content-Type", ""))
            logger.debug("%s %s -> %s", method, url, status)
            if status < 400:
                return Response(status, resp_headers, data)
            error = error_from_response(
                status,
                data,
                request_id=resp_headers.get("X-Request-ID"),
                retry_after=_retry_after_header(resp_headers),
                resource=resource,
            )
            if safe and status in self.retries.statuses and attempt < self.retries.max_retries:
                advice = error.retry_after if isinstance(error, RateLimitError) else None
                if advice is None:
                    advice = _retry_after_header(resp_headers)
                delay = self.backoff(attempt, advice)
                logger.debug("%s %s -> %s; retry in %.2fs", method, url, status, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            raise error


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return jsonlib.loads(text)
        except ValueError:
            return text
    return text
