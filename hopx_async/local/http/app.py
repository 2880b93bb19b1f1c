"""The root aiohttp application: one sub-app per auth domain, one front middleware.

``/v1`` is the control plane (API key, ``control``); ``/sandboxes/{sid}`` is a sandbox's
agent (its own token, ``agent``); ``/health`` needs nothing. The front middleware here
gives every answer an ``X-Request-ID``, refuses browser requests (any ``Origin`` header) and
turns every failure, from any sub-app, into the documented flat error body.
"""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from ..errors import ApiError, PlainAnswer
from ..version import __version__
from .agent import make_agent_app
from .common import STATE, AppState, Handler, json_answer, state
from .control import make_control_app
from .stream import commands_stream_at_root, execute_stream_at_root

__all__ = ["make_app"]

logger = logging.getLogger("hopx_async.local")

_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "INVALID_REQUEST",
}


_GO_TEXTS = {404: "404 page not found", 405: "Method Not Allowed"}


@web.middleware
async def _front(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = f"req_{secrets.token_hex(8)}"
    try:
        if "Origin" in request.headers:
            raise ApiError(
                403, "FORBIDDEN", "browser (cross-origin) requests are refused by the local backend"
            )
        response = await handler(request)
    except ApiError as exc:
        response = json_answer(exc.body(request_id), exc.status)
        response.headers.update(exc.headers)
    except PlainAnswer as exc:
        response = web.Response(status=exc.status, text=exc.text)
    except web.HTTPException as exc:
        if exc.status in _GO_TEXTS and not state(request).dialect.extensions:
            # a strict dialect's route miss: Go's net/http plain text, no JSON, no code
            response = web.Response(status=exc.status, text=_GO_TEXTS[exc.status])
            response.headers["X-Request-ID"] = request_id
            return response
        code = _HTTP_CODES.get(
            exc.status, "INVALID_REQUEST" if exc.status < 500 else "INTERNAL_ERROR"
        )
        message = f"{request.method} {request.path}: {exc.reason}"
        response = json_answer(
            {"error": message, "code": code, "request_id": request_id}, exc.status
        )
    except Exception:
        logger.exception("internal error answering %s %s", request.method, request.path)
        response = json_answer(
            {"error": "internal error", "code": "INTERNAL_ERROR", "request_id": request_id}, 500
        )
    response.headers["X-Request-ID"] = request_id
    return response


async def server_health(request: web.Request) -> web.Response:
    app_state = state(request)
    dialect = app_state.dialect
    answer: dict[str, object] = {
        "status": "healthy",
        "version": __version__,
        "isolation": app_state.isolation.mechanism,
        "dialect": dialect.name,
    }
    if dialect.extensions:  # the enforced limits are advertised in extended only
        limiter = app_state.limiter
        answer["limits"] = None if limiter is None else {"per_minute": limiter.per_minute}
        limits = app_state.launcher.enforced_limits()
        if limits is not None:
            limits["workspace_mb"] = app_state.sandboxes.disks.enforced()
        answer["sandbox_limits"] = limits
    return json_answer(answer)


def make_app(app_state: AppState) -> web.Application:
    app = web.Application(middlewares=[_front], client_max_size=32 * 1024 * 1024)
    app[STATE] = app_state
    app.router.add_get("/health", server_health)
    # The official SDK opens its WebSockets at the root of public_host's host: the token names
    # the sandbox there (see docs/local-backend.md).
    app.router.add_get("/execute/stream", execute_stream_at_root)
    app.router.add_get("/commands/stream", commands_stream_at_root)
    app.add_subapp("/v1", make_control_app(app_state.dialect))
    app.add_subapp("/sandboxes", make_agent_app(app_state.dialect))
    return app
