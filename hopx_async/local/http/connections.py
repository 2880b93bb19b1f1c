"""What one client can hold of the server: a cap on connections, and a quiet connection log.

``ConnectionCap`` sits between the listening socket and aiohttp's server. It knows which
connections are inside a handler (its middleware counts them); when a new connection would
pass the cap, the oldest connection that is not inside a handler (idle, or still sending its
headers) is closed to make room, and if every connection is busy the new one is answered
503 and closed. So thousands of idle, unauthenticated connections cannot lock out a client
that sends a real request. A connection inside a handler cannot be closed for another, so
one sandbox may hold at most ``per_sandbox`` WebSocket streams at once (by default a
sixteenth of the cap, at most 64): past it, that sandbox's new stream is answered 429
``RESOURCE_LIMIT_ERROR``; the others, ``/health`` and the control plane keep their room.

``QuietServerLog`` is the logger given to aiohttp's connection handling: a malformed request
or a dropped connection is one INFO line, not an ERROR with a traceback (and what aiohttp
logs at DEBUG stays at DEBUG, also on one line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

__all__ = ["ConnectionCap", "QuietServerLog"]

logger = logging.getLogger("hopx_async.local")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionCap:
    """At most ``limit`` open connections; the oldest idle one gives way to a new one."""

    def __init__(self, limit: int, per_sandbox: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"max_connections must be at least 1, got {limit}")
        self.limit = limit
        #: WebSocket streams one sandbox (one token at the root) may hold at once
        self.per_sandbox = max(1, min(64, limit // 16)) if per_sandbox is None else per_sandbox
        #: streams refused because their sandbox held its share
        self.over_share = 0
        self._streams: dict[str, int] = {}
        #: connections closed to make room, and new ones refused because all were busy
        self.evicted = 0
        self.refused = 0
        self._busy: dict[web.RequestHandler, int] = {}
        self._closing: set[web.RequestHandler] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the connection as busy while its request is being handled, and a stream
        against its sandbox's share."""
        share = _share(request)
        if share is not None:
            held = self._streams.get(share, 0)
            if held >= self.per_sandbox:
                self.over_share += 1
                return _over_share(self.per_sandbox)
            self._streams[share] = held + 1
        conn = request.protocol
        self._busy[conn] = self._busy.get(conn, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.pop(conn) - 1
            if left:
                self._busy[conn] = left
            if share is not None:
                held = self._streams.pop(share) - 1
                if held:
                    self._streams[share] = held

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        """The factory for ``loop.create_server``: ``server``'s, behind the cap."""

        def make() -> asyncio.BaseProtocol:
            current = server.connections
            self._closing.intersection_update(current)  # forget those gone meanwhile
            live = [conn for conn in current if conn not in self._closing]
            if len(live) >= self.limit:
                idle = next((conn for conn in live if conn not in self._busy), None)
                if idle is None:
                    self.refused += 1
                    return _Refused()
                self.evicted += 1
                self._closing.add(idle)
                idle.force_close()
            return server()

        return make


def _share(request: web.Request) -> str | None:
    """Whose share a WebSocket stream counts against: the sandbox the path names, or at the
    root (where the token names the sandbox) the credentials, as given (a token that does not
    verify is refused at once and leaves). ``None``: not a stream."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return None
    sid = request.match_info.get("sid")
    if sid is not None:
        return "sandbox " + sid
    return "token " + request.headers.get("Authorization", "")


def _over_share(limit: int) -> web.Response:
    request_id = f"req_{secrets.token_hex(8)}"
    body = {
        "error": f"this sandbox holds {limit} streams, its most at once; close one or retry",
        "code": "RESOURCE_LIMIT_ERROR",
        "retry_after": 1,
        "request_id": request_id,
    }
    return web.json_response(
        body, status=429, headers={"Retry-After": "1", "X-Request-ID": request_id}
    )


class _Refused(asyncio.Protocol):
    """Answers 503 with the documented error body and closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        body = json.dumps(
            {
                "error": "too many open connections; retry shortly",
                "code": "SERVICE_UNAVAILABLE",
                "request_id": None,
            }
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 1\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        transport.write(head + body)
        transport.close()


class QuietServerLog(logging.Logger):
    """aiohttp's connection-level errors as one INFO line of ``hopx_async.local``.

    Errors inside a route never come here: the application's middleware answers them.
    """

    def __init__(self) -> None:
        super().__init__("hopx_async.local.http")
        self.parent = logger

    def _one_line(self, level: int, msg: object, args: tuple[object, ...], exc_info: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(exc, BaseException):
            text = f"{text}: {type(exc).__name__}: {exc}"
        self.log(level, "%s", " ".join(text.split()))

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: Any = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self._one_line(logging.INFO, msg, args, exc_info)

    def error(
        self,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self._one_line(logging.INFO, msg, args, exc_info)

    def debug(
        self,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self._one_line(logging.DEBUG, msg, args, exc_info)
