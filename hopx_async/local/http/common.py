"""What the routes share: the one typed app state, JSON answers, bodies, bearer tokens."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs
from aiohttp import web

from ..errors import ApiError, bad_request
from ..runtime.box import Isolation
from ..runtime.catalog import Catalog
from ..runtime.launch import Launcher
from ..service.changes import ChangeFeed
from ..service.dialect import Dialect
from ..service.foreground import ForegroundRuns
from ..service.processes import Processes
from ..service.render import Renderer
from ..service.sandboxes import Sandboxes
from ..service.tokens import TokenSigner
from ..service.webhooks import Webhooks
from ..state.layout import Layout
from .middleware import Handler, RateLimiter
from .params import parse_body

__all__ = [
    "STATE",
    "AppState",
    "Handler",
    "bearer",
    "json_answer",
    "read_body",
    "state",
]

logger = logging.getLogger("hopx_async.local")


@attrs.frozen
class AppState:
    """Everything the route handlers need, made by ``LocalBackend`` at start."""

    layout: Layout
    launcher: Launcher
    sandboxes: Sandboxes
    processes: Processes
    changes: ChangeFeed
    foreground: ForegroundRuns
    renderer: Renderer
    webhooks: Webhooks
    catalog: Catalog
    signer: TokenSigner
    api_key: str
    #: the control plane's limit (in ``extended``, the one limit both planes share)
    limiter: RateLimiter | None
    #: Seconds a request body (or an upload's next chunk) may take to arrive.
    read_timeout: float
    dialect: Dialect
    #: the agent's limit per sandbox, and the creations' limit per API key
    agent_limiter: RateLimiter | None = None
    create_limiter: RateLimiter | None = None

    @property
    def isolation(self) -> Isolation:
        """What isolates sandboxed code (as the launcher found it at start)."""
        return self.launcher.isolation


STATE = web.AppKey("state", AppState)


def state(request: web.Request) -> AppState:
    return request.config_dict[STATE]


def json_answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body, read within the server's read deadline.

    A body that does not arrive in time is answered 408; one cut off by a disconnect is
    logged as one line (no traceback) and answered 400, which nobody will read.
    """
    timeout = state(request).read_timeout
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        logger.info(
            "%s %s: request body not received within %gs", request.method, request.path, timeout
        )
        raise ApiError(
            408, "REQUEST_TIMEOUT", f"the request body did not arrive within {timeout:g} seconds"
        ) from None
    except (ConnectionError, web.RequestPayloadError) as exc:
        logger.info("%s %s: request body cut off: %s", request.method, request.path, exc)
        raise bad_request(f"the request body could not be read: {exc}") from None
    except asyncio.CancelledError:
        where = f"{request.method} {request.path}"
        logger.info("%s: the client went away while sending the body", where)
        raise
    return parse_body(raw)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
