"""The aiohttp application: routes of the control plane and of every sandbox's agent.

Control-plane routes live under ``/v1`` and need the API key (``X-API-Key`` or
``Authorization: Bearer``). A sandbox's agent lives under ``/sandboxes/{sid}`` (its
``public_host``) and needs that sandbox's own token. One middleware gives every answer an
``X-Request-ID``, refuses browser requests (any ``Origin`` header), authenticates, applies
the optional rate limit, and turns every failure into the documented flat error body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from aiohttp import web

from ._errors import ApiError, bad_request, not_found
from ._output import cap_list_output, read_range
from ._records import SandboxRecord, iso
from ._service import TEMPLATES, Service, StartSpec, find_template
from ._tokens import TokenError
from ._validate import (
    is_header_text,
    opt_bool,
    opt_env,
    opt_int,
    opt_number,
    opt_str,
    opt_str_list,
    query_float,
    query_int,
    read_body,
    req_str,
)
from ._version import __version__

__all__ = ["FEATURES", "RateLimiter", "make_app"]

logger = logging.getLogger("hopx_async.local")

FEATURES = {
    "process_get": True,
    "output_offsets": True,
    "process_delete": True,
    "long_poll": True,
    "list_since": True,
    "idempotency_keys": True,
}

_MAX_WAIT = 30.0
_DEFAULT_MAX_BYTES = 1024 * 1024
_MAX_MAX_BYTES = 8 * 1024 * 1024
_MAX_BACKGROUND_TIMEOUT = 7 * 24 * 3600.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


@attrs.define
class RateLimiter:
    """A fixed one-minute window per key (an API key, or a sandbox for its agent)."""

    per_minute: int
    _windows: dict[str, tuple[float, int]] = attrs.Factory(dict)

    def hit(self, key: str) -> tuple[bool, dict[str, str], int]:
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
        return allowed, headers, max(1, int(reset - now + 0.999))


@attrs.define
class _Config:
    service: Service
    api_key: str
    limiter: RateLimiter | None


_CONFIG = web.AppKey("config", _Config)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _check_api_key(request: web.Request, api_key: str) -> None:
    given = request.headers.get("X-API-Key") or _bearer(request)
    if not given:
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "an API key is required (X-API-Key header)")
    if not is_header_text(given) or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "invalid API key")


def _check_token(request: web.Request, service: Service, sandbox_id: str) -> None:
    token = _bearer(request)
    if token is None:
        raise ApiError(
            401,
            "AUTHENTICATION_REQUIRED",
            "this sandbox's auth_token is required (Authorization: Bearer TOKEN)",
        )
    if not is_header_text(token):
        raise ApiError(401, "INVALID_TOKEN", "invalid token: malformed token")
    try:
        token_sandbox = service.signer.verify(token)
    except TokenError as exc:
        raise ApiError(401, "INVALID_TOKEN", f"invalid token: {exc}") from None
    if token_sandbox != sandbox_id:
        raise ApiError(403, "FORBIDDEN", "this token belongs to another sandbox")
    sbx = service.get_sandbox(sandbox_id)
    if sbx.status == "paused":
        raise ApiError(
            409,
            "CONFLICT",
            f"sandbox {sandbox_id} is paused; resume it (POST /v1/sandboxes/{sandbox_id}/resume)",
        )


_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "INVALID_REQUEST",
}


@web.middleware
async def _front(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[_CONFIG]
    request_id = f"req_{secrets.token_hex(8)}"
    extra_headers: dict[str, str] = {}
    try:
        if "Origin" in request.headers:
            raise ApiError(
                403, "FORBIDDEN", "browser (cross-origin) requests are refused by the local backend"
            )
        limit_key = None
        sandbox_id = request.match_info.get("sid")
        if request.path.startswith("/v1/"):
            _check_api_key(request, config.api_key)
            limit_key = "api"
        elif sandbox_id is not None and request.path.startswith("/sandboxes/"):
            _check_token(request, config.service, sandbox_id)
            limit_key = f"sbx:{sandbox_id}"
        if config.limiter is not None and limit_key is not None:
            allowed, extra_headers, retry_after = config.limiter.hit(limit_key)
            if not allowed:
                raise ApiError(
                    429,
                    "RATE_LIMIT_EXCEEDED",
                    f"rate limit of {config.limiter.per_minute} requests per minute exceeded",
                    extra={"retry_after": retry_after},
                    headers={"Retry-After": str(retry_after)},
                )
        response = await handler(request)
    except ApiError as exc:
        response = _json(exc.body(request_id), exc.status)
        response.headers.update(exc.headers)
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(
            exc.status, "INVALID_REQUEST" if exc.status < 500 else "INTERNAL_ERROR"
        )
        message = f"{request.method} {request.path}: {exc.reason}"
        response = _json({"error": message, "code": code, "request_id": request_id}, exc.status)
    except Exception:
        logger.exception("internal error answering %s %s", request.method, request.path)
        response = _json(
            {"error": "internal error", "code": "INTERNAL_ERROR", "request_id": request_id}, 500
        )
    response.headers["X-Request-ID"] = request_id
    response.headers.update(extra_headers)
    return response


def _service(request: web.Request) -> Service:
    return request.app[_CONFIG].service


def _sandbox(request: web.Request) -> SandboxRecord:
    # The middleware authenticated the request for this sandbox already.
    return _service(request).get_sandbox(request.match_info["sid"])


async def _to_the_end(work: Awaitable[_T]) -> _T:
    """Finish ``work`` even if the client goes away (its handler is cancelled then).

    Used where stopping half-way would leave state behind: a start, a deletion.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an error nobody waits for any more is not worth a warning


async def _body(request: web.Request) -> dict[str, Any]:
    return await read_body(request)


# -- control plane -------------------------------------------------------------------------


async def create_sandbox(request: web.Request) -> web.Response:
    body = await _body(request)
    template_name = opt_str(body, "template_name")
    raw_id = body.get("template_id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise bad_request("'template_id' must be a string")
    wanted = template_name or (None if raw_id is None else str(raw_id))
    if not wanted:
        raise bad_request("'template_name' or 'template_id' is required")
    template = find_template(wanted)
    if template is None:
        names = ", ".join(t["name"] for t in TEMPLATES)
        raise ApiError(
            404, "RESOURCE_NOT_FOUND", f"template {wanted!r} not found; available: {names}"
        )
    service = _service(request)
    sbx = service.create_sandbox(
        template=template,
        region=opt_str(body, "region"),
        timeout_seconds=opt_int(body, "timeout_seconds"),
        internet_access=opt_bool(body, "internet_access", True),
        env_vars=opt_env(body, "env_vars"),
    )
    return _json(service.sandbox_json(sbx), 201)


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
    limit = query_int(query, "limit", minimum=1, maximum=1000) or 100
    cursor = query.get("cursor")
    after = _decode_cursor(cursor) if cursor else 0
    service = _service(request)
    page, has_more = service.list_sandboxes(
        limit=limit, after_seq=after, status=query.get("status"), region=query.get("region")
    )
    return _json(
        {
            "object": "list",
            "data": [service.sandbox_json(sbx, with_token=False) for sbx in page],
            "has_more": has_more,
            "next_cursor": _encode_cursor(page[-1].seq) if has_more and page else None,
        }
    )


def _sandbox_from_path(request: web.Request) -> SandboxRecord:
    return _service(request).get_sandbox(request.match_info["id"])


async def get_sandbox(request: web.Request) -> web.Response:
    return _json(_service(request).sandbox_json(_sandbox_from_path(request)))


async def delete_sandbox(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    await _to_the_end(_service(request).delete_sandbox(sbx.id, reason="deleted through the API"))
    return _json({"status": "deleted", "id": sbx.id})


async def kill_sandbox(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    await _to_the_end(_service(request).delete_sandbox(sbx.id, reason="killed through the API"))
    return _json({"id": sbx.id, "status": "killed"})


async def pause_sandbox(request: web.Request) -> web.Response:
    sbx = _service(request).pause(_sandbox_from_path(request).id)
    return _json({"id": sbx.id, "status": sbx.status})


async def resume_sandbox(request: web.Request) -> web.Response:
    sbx = _service(request).resume(_sandbox_from_path(request).id)
    return _json({"id": sbx.id, "status": sbx.status})


async def set_sandbox_timeout(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    body = await _body(request)
    seconds = opt_int(body, "timeout_seconds")
    if seconds is None:
        raise bad_request("'timeout_seconds' is required")
    sbx = _service(request).set_timeout(sbx.id, seconds)
    return _json(
        {"id": sbx.id, "timeout_seconds": sbx.timeout_seconds, "expires_at": iso(sbx.expires_at)}
    )


async def refresh_token(request: web.Request) -> web.Response:
    sbx = _sandbox_from_path(request)
    token, expires = _service(request).signer.issue(sbx.id)
    return _json({"id": sbx.id, "auth_token": token, "token_expires_at": iso(expires)})


async def list_templates(request: web.Request) -> web.Response:
    return _json(
        {"object": "list", "data": list(TEMPLATES), "has_more": False, "next_cursor": None}
    )


async def get_template(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    template = find_template(name)
    if template is None:
        raise not_found("template", name)
    return _json(template)


async def server_health(request: web.Request) -> web.Response:
    return _json({"status": "healthy", "version": __version__})


# -- agent ---------------------------------------------------------------------------------


async def agent_health(request: web.Request) -> web.Response:
    sbx = _sandbox(request)
    return _json(
        {
            "status": "healthy",
            "version": __version__,
            "features": dict(FEATURES),
            "sandbox_id": sbx.id,
            "languages": sorted(_service(request).languages),
        }
    )


def _working_dir(body: dict[str, Any]) -> str | None:
    value = opt_str(body, "working_dir")
    return value if value is not None else opt_str(body, "workdir")


def _code_spec(
    request: web.Request, body: dict[str, Any], *, default_timeout: float, maximum: float
) -> StartSpec:
    code = req_str(body, "code")
    language = _service(request).resolve_language(opt_str(body, "language") or "python")
    return StartSpec(
        kind="code",
        language=language,
        timeout=opt_number(body, "timeout", default_timeout, maximum=maximum),
        working_dir=_working_dir(body),
        env=opt_env(body, "env"),
        name=opt_str(body, "name"),
        code=code,
    )


_SHELLS = frozenset({"bash", "sh", "/bin/bash", "/bin/sh", "/usr/bin/bash"})


def _command_spec(body: dict[str, Any], *, default_timeout: float, maximum: float) -> StartSpec:
    command = req_str(body, "command")
    args = opt_str_list(body, "args")
    if "\x00" in command or any("\x00" in arg for arg in args or ()):
        raise bad_request("'command' and 'args' must not contain NUL characters")
    if args is None:
        argv, text = ["/bin/sh", "-c", command], command
    else:
        argv = [command, *args]
        shell_form = command in _SHELLS and len(args) == 2 and args[0] == "-c"
        text = args[1] if shell_form else shlex.join(argv)
    return StartSpec(
        kind="command",
        language="bash",
        timeout=opt_number(body, "timeout", default_timeout, maximum=maximum),
        working_dir=_working_dir(body),
        env=opt_env(body, "env"),
        name=opt_str(body, "name"),
        argv=argv,
        command=text,
    )


async def execute(request: web.Request) -> web.Response:
    spec = _code_spec(request, await _body(request), default_timeout=60, maximum=300)
    return _json(await _service(request).run_sync(_sandbox(request), spec))


async def execute_background(request: web.Request) -> web.Response:
    body = await _body(request)
    spec = _code_spec(request, body, default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT)
    return await _start(request, spec)


async def commands_run(request: web.Request) -> web.Response:
    spec = _command_spec(await _body(request), default_timeout=30, maximum=3600)
    return _json(await _service(request).run_sync(_sandbox(request), spec))


async def commands_background(request: web.Request) -> web.Response:
    body = await _body(request)
    spec = _command_spec(body, default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT)
    return await _start(request, spec)


async def _start(request: web.Request, spec: StartSpec) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise bad_request("header 'Idempotency-Key' must be 1 to 255 characters")
    return _json(await _to_the_end(_service(request).start(_sandbox(request), spec, key)))


def _query_bool(request: web.Request, key: str, default: bool) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_request(f"query parameter '{key}' must be true or false")


async def list_processes(request: web.Request) -> web.Response:
    service = _service(request)
    sbx = _sandbox(request)
    output = _query_bool(request, "output", True)
    since = query_int(request.query, "since", minimum=0, maximum=2**63 - 1)
    wait = query_float(request.query, "wait", maximum=_MAX_WAIT)
    if since is not None and wait is not None:
        await service.wait_for_change(sbx.id, since, wait)
    records = list(service.procs.get(sbx.id, {}).values())
    if since is not None:
        records = [rec for rec in records if rec.version > since]
    processes = [service.process_json(rec, output=output) for rec in records]
    cap_list_output(processes)
    return _json({"processes": processes, "count": len(processes), "version": sbx.version})


async def get_process(request: web.Request) -> web.Response:
    service = _service(request)
    sbx = _sandbox(request)
    rec = service.get_process(sbx.id, request.match_info["pid"])
    query = request.query
    stdout_offset = query_int(query, "stdout_offset", minimum=0, maximum=2**62)
    stderr_offset = query_int(query, "stderr_offset", minimum=0, maximum=2**62)
    max_bytes = query_int(query, "max_bytes", minimum=1, maximum=_MAX_MAX_BYTES)
    wait = query_float(query, "wait", maximum=_MAX_WAIT)
    with_offsets = stdout_offset is not None or stderr_offset is not None
    offsets = (stdout_offset or 0, stderr_offset or 0) if with_offsets else None
    if wait is not None:
        await service.wait_for_process(rec, wait, offsets)
    data = service.process_json(rec, output=offsets is None)
    if offsets is not None:
        final = rec.finished
        for stream, offset in zip(("stdout", "stderr"), offsets, strict=True):
            text, next_offset, size = read_range(
                service.output_path(rec, stream),
                offset,
                max_bytes or _DEFAULT_MAX_BYTES,
                final=final,
            )
            data[stream] = text
            data[f"{stream}_next_offset"] = next_offset
            data[f"{stream}_size"] = size
    return _json(data)


async def delete_process(request: web.Request) -> web.Response:
    pid = request.match_info["pid"]
    _service(request).delete_process(_sandbox(request).id, pid)
    return _json({"process_id": pid, "status": "deleted"})


async def _kill(request: web.Request, process_id: str) -> web.Response:
    rec = await _service(request).kill(_sandbox(request).id, process_id)
    return _json(
        {
            "process_id": rec.process_id,
            "status": rec.status,
            "message": f"process {rec.process_id} {rec.status}; its process group was ended",
        }
    )


async def kill_by_body(request: web.Request) -> web.Response:
    body = await _body(request)
    process_id = opt_str(body, "process_id") or request.query.get("process_id")
    if not process_id:
        raise bad_request("'process_id' is required")
    return await _kill(request, process_id)


async def kill_by_path(request: web.Request) -> web.Response:
    return await _kill(request, request.match_info["pid"])


async def os_processes(request: web.Request) -> web.Response:
    found = _service(request).os_processes(_sandbox(request).id)
    return _json({"processes": found, "count": len(found)})


async def get_env(request: web.Request) -> web.Response:
    return _json(_service(request).env_vars_json(_sandbox(request)))


async def _set_env(request: web.Request, *, merge: bool) -> web.Response:
    body = await _body(request)
    if body.get("env_vars") is None:
        raise bad_request("'env_vars' is required")
    _service(request).set_env(_sandbox(request), opt_env(body, "env_vars"), merge=merge)
    return web.Response(status=204)


async def put_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=False)


async def patch_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=True)


async def delete_env(request: web.Request) -> web.Response:
    body = await _body(request)
    names: list[str] | None = None
    for key in ("keys", "names", "env_vars"):
        value = body.get(key)
        if value is None:
            continue
        names = list(value) if isinstance(value, dict) else opt_str_list(body, key)
        break
    _service(request).delete_env(_sandbox(request), names)
    return web.Response(status=204)


def make_app(
    service: Service, *, api_key: str, rate_limit_per_minute: int | None
) -> web.Application:
    app = web.Application(middlewares=[_front], client_max_size=32 * 1024 * 1024)
    limiter = None if rate_limit_per_minute is None else RateLimiter(rate_limit_per_minute)
    app[_CONFIG] = _Config(service=service, api_key=api_key, limiter=limiter)
    app.router.add_get("/health", server_health)
    app.router.add_post("/v1/sandboxes", create_sandbox)
    app.router.add_get("/v1/sandboxes", list_sandboxes)
    app.router.add_get("/v1/sandboxes/{id}", get_sandbox)
    app.router.add_delete("/v1/sandboxes/{id}", delete_sandbox)
    app.router.add_post("/v1/sandboxes/{id}/kill", kill_sandbox)
    app.router.add_post("/v1/sandboxes/{id}/pause", pause_sandbox)
    app.router.add_post("/v1/sandboxes/{id}/resume", resume_sandbox)
    app.router.add_put("/v1/sandboxes/{id}/timeout", set_sandbox_timeout)
    app.router.add_post("/v1/sandboxes/{id}/token/refresh", refresh_token)
    app.router.add_get("/v1/templates", list_templates)
    app.router.add_get("/v1/templates/{name}", get_template)

    agent = "/sandboxes/{sid}"
    app.router.add_get(agent + "/health", agent_health)
    app.router.add_post(agent + "/execute", execute)
    app.router.add_post(agent + "/execute/background", execute_background)
    app.router.add_get(agent + "/execute/processes", list_processes)
    app.router.add_get(agent + "/execute/processes/{pid}", get_process)
    app.router.add_delete(agent + "/execute/processes/{pid}", delete_process)
    app.router.add_delete(agent + "/execute/kill", kill_by_body)
    app.router.add_post(agent + "/execute/kill/{pid}", kill_by_path)
    app.router.add_post(agent + "/processes/{pid}/kill", kill_by_path)
    app.router.add_get(agent + "/processes", os_processes)
    app.router.add_post(agent + "/commands/run", commands_run)
    app.router.add_post(agent + "/commands/background", commands_background)
    app.router.add_get(agent + "/env", get_env)
    app.router.add_put(agent + "/env", put_env)
    app.router.add_patch(agent + "/env", patch_env)
    app.router.add_delete(agent + "/env", delete_env)
    return app
