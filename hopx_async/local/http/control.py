"""The control plane (``/v1``): sandboxes and templates, behind the API key."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from ..errors import ApiError, bad_request
from ..runtime.catalog import TEMPLATES, template_or_404
from ..runtime.tasks import to_the_end
from ..service.dialect import Dialect
from ..service.tokens import is_header_text
from ..state.records import SandboxRecord, iso
from .common import Handler, bearer, json_answer, read_body, state
from .middleware import with_headers
from .params import opt_bool, opt_env, opt_int, opt_str, query_int

__all__ = ["make_control_app"]


@web.middleware
async def _api_key_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    app_state = state(request)
    given = request.headers.get("X-API-Key")
    if not given and app_state.dialect.control_bearer:
        given = bearer(request)
    if not given:
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "an API key is required (X-API-Key header)")
    if not is_header_text(given) or not hmac.compare_digest(
        given.encode(), app_state.api_key.encode()
    ):
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "invalid API key")
    headers = {} if app_state.limiter is None else app_state.limiter.hit("api")
    return await with_headers(request, handler, headers)


def _sandbox_from_path(request: web.Request) -> SandboxRecord:
    return state(request).sandboxes.get(request.match_info["id"])


async def create_sandbox(request: web.Request) -> web.Response:
    body = await read_body(request)
    template_name = opt_str(body, "template_name")
    raw_id = body.get("template_id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise bad_request("'template_id' must be a string")
    wanted = template_name or (None if raw_id is None else str(raw_id))
    if not wanted:
        raise bad_request("'template_name' or 'template_id' is required")
    template = template_or_404(wanted)
    app_state = state(request)
    env_vars = opt_env(body, "env_vars")  # read (and checked) in every dialect
    if app_state.create_limiter is not None:
        app_state.create_limiter.hit("create")
    timeout_seconds = opt_int(body, "timeout_seconds")
    # Made to the end (its image mounted, its record committed) even if the client goes away.
    sbx = await to_the_end(
        app_state.sandboxes.create(
            template=template,
            region=opt_str(body, "region"),
            timeout_seconds=(
                app_state.dialect.default_sandbox_timeout
                if timeout_seconds is None
                else timeout_seconds
            ),
            internet_access=opt_bool(body, "internet_access", True),
            # the service does not apply them: its clients follow create with PATCH /env
            env_vars=env_vars if app_state.dialect.create_applies_env else {},
        )
    )
    return json_answer(app_state.renderer.sandbox(sbx), 201)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "after":
            raise ValueError(cursor)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_request("query parameter 'cursor' is not a cursor this server issued") from None


async def list_sandboxes(request: web.Request) -> web.Response:
    query = request.query
    app_state = state(request)
    dialect = app_state.dialect
    limit = query_int(query, "limit", minimum=1, maximum=dialect.page_limit_max) or 100
    cursor = query.get("cursor") if dialect.list_cursor else None  # else: ignored
    after = _decode_cursor(cursor) if cursor else 0
    page, has_more = app_state.sandboxes.page(
        limit=limit, after_seq=after, status=query.get("status"), region=query.get("region")
    )
    answer = {
        "object": "list",
        "data": [app_state.renderer.sandbox(sbx, with_token=False) for sbx in page],
        "has_more": has_more,
    }
    if dialect.list_cursor:
        answer["next_cursor"] = _encode_cursor(page[-1].seq) if has_more and page else None
    else:  # the OpenAPI SandboxList: no cursor
        answer["url"] = "/v1/sandboxes"
    return json_answer(answer)


async def get_sandbox(request: web.Request) -> web.Response:
    return json_answer(state(request).renderer.sandbox(_sandbox_from_path(request)))


async def delete_sandbox(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    await to_the_end(state(request).sandboxes.delete(sbx.id, reason="deleted through the API"))
    return json_answer({"status": "deleted", "id": sbx.id})


async def kill_sandbox(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    await to_the_end(state(request).sandboxes.delete(sbx.id, reason="killed through the API"))
    return json_answer({"id": sbx.id, "status": "killed"})


async def pause_sandbox(request: web.Request) -> web.Response:
    sbx = state(request).sandboxes.pause(request.match_info["id"])
    return json_answer({"id": sbx.id, "status": sbx.status})


async def resume_sandbox(request: web.Request) -> web.Response:
    sbx = state(request).sandboxes.resume(request.match_info["id"])
    return json_answer({"id": sbx.id, "status": sbx.status})


async def set_sandbox_timeout(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    body = await read_body(request)
    seconds = opt_int(body, "timeout_seconds")
    if seconds is None:
        raise bad_request("'timeout_seconds' is required")
    sbx = state(request).sandboxes.set_timeout(sbx.id, seconds)
    return json_answer(
        {"id": sbx.id, "timeout_seconds": sbx.timeout_seconds, "expires_at": iso(sbx.expires_at)}
    )


async def refresh_token(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    return json_answer({"id": sbx.id, **state(request).renderer.token(sbx.id)})


async def list_templates(request: web.Request) -> web.Response:
    return json_answer(
        {"object": "list", "data": list(TEMPLATES), "has_more": False, "next_cursor": None}
    )


async def get_template(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    template = template_or_404(name)
    return json_answer(template)


def make_control_app(dialect: Dialect) -> web.Application:
    """The ``/v1`` sub-application (the root app holds the shared state)."""
    app = web.Application(middlewares=[_api_key_auth])
    app.router.add_post("/sandboxes", create_sandbox)
    app.router.add_get("/sandboxes", list_sandboxes)
    app.router.add_get("/sandboxes/{id}", get_sandbox)
    app.router.add_delete("/sandboxes/{id}", delete_sandbox)
    if dialect.sandbox_kill_route:
        app.router.add_post("/sandboxes/{id}/kill", kill_sandbox)
    app.router.add_post("/sandboxes/{id}/pause", pause_sandbox)
    app.router.add_post("/sandboxes/{id}/resume", resume_sandbox)
    app.router.add_put("/sandboxes/{id}/timeout", set_sandbox_timeout)
    app.router.add_post("/sandboxes/{id}/token/refresh", refresh_token)
    app.router.add_get("/templates", list_templates)
    app.router.add_get("/templates/{name}", get_template)
    return app
