"""HTTP transport: one aiohttp session per client, retries, rate limits and error mapping.

The retry loop lives here; its decisions (which failures retry, how long to wait) live in
:mod:`._retry`, which does no I/O. A POST that starts something is never sent twice unless
the server deduplicates it (an idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import anyio
import attrs
from multidict import CIMultiDictProxy

from ._config import Limits, RetryPolicy, Timeouts
from ._errors import (
    HopxError,
    NetworkError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    ResponseTooLargeError,
    error_from_response,
)
from ._retry import (
    RateState,
    backoff,
    parse_retry_after,
    should_retry_failure,
    should_retry_status,
)
from ._utils import SecretHeaders
from ._version import __version__

logger = logging.getLogger("hopx_async")

USER_AGENT = f"hopx-async/{__version__}"


def _failure(
    request: str, exc: aiohttp.ClientError | asyncio.TimeoutError, limit: float
) -> tuple[bool, HopxError]:
    """What a failed send means: whether the server may have seen the request, and the
    error to raise if it is not retried (``limit``: the request's time limit in seconds)."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        # The connection was never opened: the server cannot have seen the request.
        return False, NetworkError(f"{request}: cannot connect: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        return True, RequestTimeoutError(f"{request}: no answer within {limit:g}s")
    return True, NetworkError(f"{request}: {type(exc).__name__}: {exc}")


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


#: the words of the error for a client used from an event loop other than its own
BOUND_ELSEWHERE = "bound to another event loop"


class Transport:
    """Owns the client's one aiohttp session and sends every request."""

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        limits: Limits,
        retries: RetryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeouts = timeouts
        self.limits = limits
        self.retries = retries
        #: the Unix time, injectable for tests (rate-limit resets, token expiry)
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rates: dict[str, RateState] = {}
        #: 429 and 503 answers retried here ("absorbed"), by scope ("control", a sandbox id)
        self.throttled: dict[str, int] = {}
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
                    f"this HopX client is {BOUND_ELSEWHERE} ({self._loop!r}), not the running "
                    f"one ({loop!r}); create one client per event loop (hopx_sync clients run "
                    "their own loop for you)"
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
            trace_configs=[_NO_REDIRECTS],
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(
                total=self.timeouts.request, connect=self.timeouts.connect
            ),
        )
        self._loop = loop
        # anyio imports its event-loop backend on first use (tens of ms): let that happen
        # here, once, rather than inside the first wait() or wait_all()
        anyio.get_current_task()
        return self._session

    async def aclose(self, *, final: bool = True) -> None:
        """Close the session; unless ``final``, the next request opens a new one."""
        self.closed = self.closed or final
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def rate_state(self, scope: str) -> RateState:
        """What the server said of the rate limit of ``scope`` ("control" or a sandbox id)."""
        state = self._rates.get(scope)
        if state is None:
            state = self._rates[scope] = RateState(self.clock)
        return state

    def min_interval(self, scope: str) -> float:
        """The shortest polling interval that stays within half the scope's rate limit."""
        state = self._rates.get(scope)
        return 0.0 if state is None else state.poll_spacing()

    def backoff(self, attempt: int, advice: float | None) -> float:
        """Seconds before retry ``attempt`` (0-based): server advice, else full jitter."""
        return backoff(self.retries, attempt, advice)

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

        ``safe`` defaults to True for GET and DELETE. ``timeout`` overrides the request's
        time limit (long polls). ``scope`` keys rate-limit bookkeeping (one per sandbox).
        Redirects are not followed: a 3xx answer raises :class:`RedirectError` (its
        ``location``), so a body is never re-sent to another host.
        """
        if safe is None:
            safe = method in ("GET", "DELETE", "HEAD")
        session = self._get_session()
        rate = self.rate_state(scope)
        # Redirects are never followed: a body (env_vars at create) must not go to another host
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if json is not None:
            kwargs["data"] = jsonlib.dumps(json).encode()  # bytes: no text payload
            kwargs["headers"] = SecretHeaders({**headers, "Content-Type": "application/json"})
        if params:
            kwargs["params"] = params
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout, connect=self.timeouts.connect)
        attempt = 0
        while True:
            hold = rate.delay()
            while hold > 0:  # nothing free in the window: others may be waiting as well
                with rate.holding():
                    await asyncio.sleep(hold)
                hold = rate.delay()
            try:
                with rate.sending():
                    async with session.request(method, url, **kwargs) as resp:
                        raw = await _read_bounded(resp, self.limits.max_response_bytes)
                        status = resp.status
                        resp_headers = resp.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                limit = timeout if timeout is not None else self.timeouts.request
                reached, failure = _failure(f"{method} {url}", exc, limit)
                if not should_retry_failure(
                    self.retries, reached=reached, safe=safe, attempt=attempt
                ):
                    raise failure from exc
                delay = self.backoff(attempt, None)
                logger.debug("%s; retry in %.2fs", failure, delay)
            else:
                rate.update(resp_headers)
                data = _decode(raw, resp_headers.get("Content-Type", ""))
                logger.debug("%s %s -> %s", method, url, status)
                if 300 <= status < 400:
                    raise _redirect(method, url, status, resp_headers, data)
                if status < 400:
                    return Response(status, resp_headers, data)
                header_advice = parse_retry_after(resp_headers.get("Retry-After"), now=self.clock())
                error = error_from_response(
                    status,
                    data,
                    request_id=resp_headers.get("X-Request-ID"),
                    retry_after=header_advice,
                    resource=resource,
                )
                if isinstance(error, RateLimitError):
                    if error.retry_after is None:
                        error.retry_after = rate.until_reset()  # X-RateLimit-Reset + margin
                    rate.refused(error.retry_after)  # every request of the scope holds
                if not should_retry_status(self.retries, status, safe=safe, attempt=attempt):
                    raise error
                if status in (429, 503):
                    self.throttled[scope] = self.throttled.get(scope, 0) + 1
                advice = error.retry_after if isinstance(error, RateLimitError) else None
                if advice is None:
                    advice = header_advice
                delay = self.backoff(attempt, advice)
                logger.debug(
                    "%s %s -> %s; retry in %.3fs (server advice: %s)",
                    method,
                    url,
                    status,
                    delay,
                    "none" if advice is None else f"{advice:g}s",
                )
            attempt += 1
            await asyncio.sleep(delay)

    async def websocket(
        self, url: str, *, headers: Mapping[str, str], resource: str | None = None
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open a WebSocket (never retried here: the caller decides what a retry means).

        A refused handshake raises the :class:`APIError` of its status, a redirect
        :class:`RedirectError` (it is not followed); a connection that cannot be made raises
        :class:`NetworkError`.
        """
        session = self._get_session()
        try:
            return await session.ws_connect(
                url,
                headers=headers,
                heartbeat=30,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status < 400:  # answered, but not upgraded (e.g. a proxy in between)
                raise NetworkError(
                    f"WebSocket {url}: not upgraded (HTTP {exc.status} {exc.message})"
                ) from exc
            request_id = exc.headers.get("X-Request-ID") if exc.headers else None
            raise error_from_response(
                exc.status,
                f"WebSocket {url}: HTTP {exc.status} {exc.message}",
                request_id=request_id,
                resource=resource,
            ) from exc
        except asyncio.TimeoutError as exc:
            raise RequestTimeoutError(f"WebSocket {url}: no handshake answer") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"WebSocket {url}: {type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        data: Any = None,
        scope: str = "",
        resource: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request whose body (``data``: a form, a file) or answer is streamed.

        Sent once (a streamed body cannot be replayed); an error answer raises as in
        :meth:`request`. There is no total deadline, only ``timeouts.request`` between two
        reads, so a large transfer may take as long as it needs while it makes progress.
        """
        session = self._get_session()
        rate = self.rate_state(scope)
        hold = rate.delay()
        if hold > 0:
            await asyncio.sleep(hold)
        kwargs: dict[str, Any] = {
            "headers": headers,
            "allow_redirects": False,
            "timeout": aiohttp.ClientTimeout(
                total=None, connect=self.timeouts.connect, sock_read=self.timeouts.request
            ),
        }
        if params:
            kwargs["params"] = params
        if data is not None:
            kwargs["data"] = data
        try:
            async with session.request(method, url, **kwargs) as resp:
                rate.update(resp.headers)
                logger.debug("%s %s -> %s (streamed)", method, url, resp.status)
                if 300 <= resp.status < 400:
                    raise _redirect(method, url, resp.status, resp.headers, None)
                if resp.status >= 400:
                    body = _decode(await resp.read(), resp.headers.get("Content-Type", ""))
                    raise error_from_response(
                        resp.status,
                        body,
                        request_id=resp.headers.get("X-Request-ID"),
                        retry_after=parse_retry_after(
                            resp.headers.get("Retry-After"), now=self.clock()
                        ),
                        resource=resource,
                    )
                yield resp
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NetworkError(f"{method} {url}: cannot connect: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise RequestTimeoutError(
                f"{method} {url}: nothing received for {self.timeouts.request:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc


async def _refuse_redirect(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
) -> None:
    """A redirect about to be followed (only ``ws_connect`` can: every other request is
    sent with ``allow_redirects=False``): raise before anything goes to the new URL."""
    resp = params.response
    raise _redirect(params.method, str(params.url), resp.status, resp.headers, None)


_NO_REDIRECTS = aiohttp.TraceConfig()
_NO_REDIRECTS.on_request_redirect.append(_refuse_redirect)
_NO_REDIRECTS.freeze()


def _redirect(
    method: str, url: str, status: int, headers: Mapping[str, str], body: Any
) -> RedirectError:
    location = headers.get("Location")
    return RedirectError(
        f"{method} {url} was redirected to {location or '(no Location)'}; "
        "redirects are not followed",
        status=status,
        request_id=headers.get("X-Request-ID"),
        body=body,
        location=location,
    )


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``resp``, or :class:`ResponseTooLargeError` past ``limit`` bytes (checked
    against ``Content-Length`` when the body is not compressed, else as it arrives)."""
    length = resp.content_length
    if length is not None and "Content-Encoding" not in resp.headers:
        if length <= limit:
            return await resp.read()
        raise _too_large(resp, limit)
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise _too_large(resp, limit)
    return bytes(buf)


def _too_large(resp: aiohttp.ClientResponse, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"{resp.method} {resp.url}: the answer is larger than {limit} bytes "
        "(Limits.max_response_bytes)",
        limit=limit,
    )


def _decode(raw: bytes, content_type: str) -> Any:
    """The JSON value of an answer's body, else its text (``None`` when empty).

    >>> _decode(b'{"a": 1}', ""), _decode(b"not json", "application/json")
    ({'a': 1}, 'not json')
    """
    if not raw:
        return None
    if "json" in content_type or raw[:1] in (b"{", b"["):
        try:
            return jsonlib.loads(raw)  # bytes: no text copy of a large list first
        except ValueError:  # not JSON, or not UTF-8
            pass
    return raw.decode("utf-8", "replace")
