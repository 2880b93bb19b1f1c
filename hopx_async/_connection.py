"""The connection to one sandbox's agent: its URL, token (and refresh), readiness, features,
and the requests, streams and WebSockets that go to it (the process calls are in :mod:`._agent`).

The agent lives at the sandbox's ``public_host``; every request carries the sandbox's own
``auth_token``. An :class:`AgentConnection` refreshes that token shortly before it expires, and once
after any agent ``401``; it polls ``/health`` before first use and remembers the
features the agent advertises (long polls, offsets, idempotency keys, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from ._config import PollPolicy
from ._control import ControlPlane
from ._errors import (
    AuthenticationError,
    ConflictError,
    HopxError,
    NetworkError,
    NotFoundError,
    SandboxNotFoundError,
    ServerError,
    error_from_response,
)
from ._models import SandboxInfo
from ._transport import Response
from ._utils import SecretHeaders
from ._wire import agent_base, token_of, with_status

__all__ = ["PAUSE_ERRORS", "READY_TIMEOUT", "TOKEN_MARGIN", "AgentConnection"]

#: how long the agent may take to answer /health as healthy after a create
READY_TIMEOUT = 60.0
#: what a paused sandbox's agent answers: 409 (the local backend), or, as the service is
#: unreachable while paused, a 5xx or a dropped connection; waits then ask the control plane
PAUSE_ERRORS = (ConflictError, ServerError, NetworkError)
#: seconds after a wait last found the sandbox paused during which a pause answer of its agent
#: is asked again rather than raised (the sandbox was just resumed)
RESUME_GRACE = 5.0
#: a token this close to its expiry (seconds) is refreshed before it is used
TOKEN_MARGIN = 5.0


class AgentConnection:
    """The connection to one sandbox's agent: URL, token, readiness, features, requests."""

    def __init__(
        self,
        control: ControlPlane,
        info: SandboxInfo,
        *,
        token: str | None = None,
        token_expires_at: datetime | None = None,
    ) -> None:
        self.control = control
        self.info = info
        #: how waits, output reads and long polls of this sandbox pace themselves
        self.polling: PollPolicy = control.polling
        #: one request's deadline (a long poll waits this much longer than it asks the server)
        self.request_timeout: float = control.transport.timeouts.request
        self._url = agent_base(info)
        self._token = token
        self._token_expires_at = token_expires_at
        self._features: dict[str, Any] | None = None
        #: when (``time.monotonic()``) a wait last found the sandbox paused, since the agent's
        #: last answer (None: not since then)
        self._paused_at: float | None = None
        self._ready_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        #: whether the sandbox was killed through this client
        self.killed = False
        #: token refreshes done (for diagnostics and tests)
        self.token_refreshes = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.info.id}>"

    @property
    def sandbox_id(self) -> str:
        return self.info.id

    # ---------------------------------------------------------------------- state
    def take_record(self, data: Any) -> None:
        """Take a sandbox record (and the token it may carry) as the known state."""
        if not isinstance(data, Mapping):
            return
        info = SandboxInfo.from_wire(data)
        if info.id:
            self.info = info
            if self._url is None:
                self._url = agent_base(info)
        token = token_of(data)
        if token is not None:
            self._token, self._token_expires_at = token

    def take_status(self, data: Any, default: str) -> None:
        """Take the status of a pause/resume answer."""
        self.info = with_status(self.info, data, default)

    def has_feature(self, name: str) -> bool:
        """Whether the agent advertised ``name`` (known after the first request)."""
        return bool(self._features and self._features.get(name) is True)

    def forget_feature(self, name: str) -> None:
        """Stop using an advertised feature that turned out not to work (e.g. behind a proxy)."""
        if self._features is not None:
            self._features.pop(name, None)

    def min_poll_interval(self) -> float:
        """The shortest polling interval the agent's rate limit allows now: what is free
        spread until the window's reset (while starts go out, a quarter of what is free above
        a reserve for them)."""
        return self.control.transport.min_interval(self.sandbox_id)

    def poll_hold(self) -> float:
        """Seconds a poll waits before it goes out: until the reset while only the reserve
        for other requests (starts) is free in the agent's rate-limit window."""
        return self.control.transport.rate_state(self.sandbox_id).poll_delay()

    def forget_token(self) -> None:
        """Treat the token's expiry as unknown (the server's 401 then triggers a refresh)."""
        self._token_expires_at = None

    # -------------------------------------------------------------- control plane
    async def refresh_info(self) -> SandboxInfo:
        """Fetch the sandbox record from the control plane."""
        self.take_record(await self.control.get_sandbox(self.sandbox_id))
        return self.info

    async def refresh_token(self, stale: str | None) -> None:
        """Get a new token, unless another call already replaced ``stale``."""
        async with self._refresh_lock:
            if self._token != stale:
                return
            data = await self.control.sandbox_action(self.sandbox_id, "token/refresh")
            token = token_of(data)
            if token is None:
                raise HopxError(f"token refresh for sandbox {self.sandbox_id} returned no token")
            self._token, self._token_expires_at = token
            self.token_refreshes += 1

    async def is_paused(self) -> bool:
        """Whether the control plane says the sandbox is paused now."""
        return (await self.refresh_info()).status == "paused"

    # ----------------------------------------------------------------- readiness
    async def ensure_ready(self) -> None:
        """Poll ``/health`` until the agent is healthy (once), and read its features.

        Past ``READY_TIMEOUT`` of 5xx answers or dropped connections, a sandbox the control
        plane says is paused raises that error (:meth:`ensure_ready_waiting` then waits while
        it is paused); any other sandbox a clear :class:`HopxError`."""
        if self._features is not None:
            return
        async with self._ready_lock:
            if self._features is not None:
                return
            if self._url is None or self._token is None:
                await self.refresh_info()
                if self._token is None:
                    await self.refresh_token(None)
            deadline = time.monotonic() + READY_TIMEOUT
            delay = 0.05
            last: HopxError | None = None
            while True:
                try:
                    data = (await self.request("GET", "/health", ready=False)).mapping
                    if str(data.get("status", "healthy")).lower() in ("healthy", "ok"):
                        features = data.get("features")
                        self._features = dict(features) if isinstance(features, Mapping) else {}
                        return
                except (NetworkError, ServerError, AuthenticationError, NotFoundError) as exc:
                    last = exc  # a booting agent answers 404, 401 or 5xx before it is ready
                if time.monotonic() > deadline:
                    if isinstance(last, PAUSE_ERRORS) and await self.is_paused():
                        raise last  # paused, so unreachable: not a boot that failed
                    raise HopxError(
                        f"the agent of sandbox {self.sandbox_id} did not become healthy "
                        f"within {READY_TIMEOUT:g}s"
                    )
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _prepare(self, *, ready: bool) -> str:
        """Before any agent request: not killed, ready, a fresh token; the agent's base URL."""
        if self.killed:
            raise SandboxNotFoundError(
                f"sandbox {self.sandbox_id} was killed; create a new one",
                status=404,
                code="RESOURCE_NOT_FOUND",
            )
        if ready:
            await self.ensure_ready()
        expires = self._token_expires_at
        if expires is not None and expires.timestamp() - TOKEN_MARGIN < self.control.clock():
            await self.refresh_token(self._token)
        if self._url is None:
            raise HopxError(
                f"sandbox {self.sandbox_id} has no public_host or direct_url to reach its agent"
            )
        return self._url

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        safe: bool | None = None,
        timeout: float | None = None,
        resource: str | None = None,
        headers: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> Response:
        """One request to the agent: readiness first, one token refresh on 401.

        A 404 means the sandbox is gone (:class:`SandboxNotFoundError`) unless ``resource``
        names what else it is about ("process").
        """
        base = await self._prepare(ready=ready)
        for attempt in (0, 1):
            token = self._token
            sent = SecretHeaders({"Authorization": f"Bearer {token}", **(headers or {})})
            try:
                response = await self.control.transport.request(
                    method,
                    base + path,
                    headers=sent,
                    json=json,
                    params=params,
                    safe=safe,
                    timeout=timeout,
                    scope=self.sandbox_id,
                    resource=resource or "sandbox",
                )
                self._paused_at = None  # the agent answered: a pause seen before is over
                return response
            except AuthenticationError:
                # any 401 may be an expired token (the service sends no INVALID_TOKEN);
                # readiness waits a booting agent's 401 out instead
                if attempt or not ready:
                    raise
                await self.refresh_token(token)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        resource: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed request (uploads, downloads), with readiness and token as in
        :meth:`request`. ``body`` makes the request body; after a ``401`` it
        is called again for the one resend (it raises if it cannot rewind)."""
        base = await self._prepare(ready=True)
        for attempt in (0, 1):
            token = self._token
            entered = False
            try:
                async with self.control.transport.stream(
                    method,
                    base + path,
                    headers=SecretHeaders({"Authorization": f"Bearer {token}"}),
                    params=params,
                    data=None if body is None else body(),
                    scope=self.sandbox_id,
                    resource=resource or "sandbox",
                ) as resp:
                    entered = True
                    yield resp
                    return
            except AuthenticationError:
                if attempt or entered:
                    raise
                await self.refresh_token(token)

    async def ensure_ready_waiting(self) -> None:
        """:meth:`ensure_ready`, waiting while the sandbox is paused (for waits and streams)."""
        while True:
            try:
                await self.ensure_ready()
                return
            except PAUSE_ERRORS as exc:
                await self.wait_while_paused(exc)

    async def wait_while_paused(self, error: HopxError, sent: float | None = None) -> None:
        """After a 409, 5xx or dropped connection (:data:`PAUSE_ERRORS`): return once it is
        worth asking again if the control plane says paused, or if it was paused a moment
        before the failed request was ``sent`` (``time.monotonic()``; now if not given)
        (``RESUME_GRACE`` s: a resumed agent may answer as paused a little longer, and the
        answer may have been on its way; counted to the request's first attempt, so that its
        retries do not use the grace up), else raise ``error``."""
        if await self.is_paused():
            self._paused_at = time.monotonic()
            await asyncio.sleep(self.polling.max_interval)
            return
        began = time.monotonic() if sent is None else sent
        if self._paused_at is not None and began - self._paused_at < RESUME_GRACE:
            await asyncio.sleep(self.polling.max_interval)
            return
        raise error

    # --------------------------------------------------------------------- streams
    async def open_websocket(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        resource: str | None = None,
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """Open a WebSocket to the agent: readiness first, one token refresh on a 401."""
        base = await self._prepare(ready=True)
        url = base + path + ("?" + urlencode(params) if params else "")
        for attempt in (0, 1):
            token = self._token
            try:
                return await self.control.transport.websocket(
                    url,
                    headers=SecretHeaders({"Authorization": f"Bearer {token}"}),
                    resource=resource,
                )
            except AuthenticationError:
                # A refused handshake has no body: any 401 may be an expired token.
                if attempt:
                    raise
                await self.refresh_token(token)
        raise AssertionError("unreachable")

    async def stream_messages(
        self,
        path: str,
        request: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        resource: str | None = None,
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """The JSON messages of one WebSocket stream, up to and including ``complete``.

        ``request`` is sent first. An ``error`` message raises its :class:`APIError`; a
        connection that closes after a ``result`` but before ``complete`` ends the stream
        normally, one that closes before any ``result`` raises :class:`NetworkError`.
        """
        ws = await self.open_websocket(path, params=params, resource=resource)
        got_result = False
        try:
            try:
                if request is not None:
                    await ws.send_str(jsonlib.dumps(request))
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise NetworkError(
                    f"the stream {path} of sandbox {self.sandbox_id}: {exc}"
                ) from exc
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                try:
                    data = jsonlib.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, Mapping):
                    continue
                if data.get("type") == "error":
                    raise error_from_response(400, data, resource=resource)
                yield data
                kind = data.get("type")
                if kind == "complete":
                    return
                got_result = got_result or kind == "result"
            if got_result:  # closed after the result without ``complete``: the run is over
                return
            raise NetworkError(
                f"the stream {path} of sandbox {self.sandbox_id} ended before it completed"
            )
        finally:
            await ws.close()
