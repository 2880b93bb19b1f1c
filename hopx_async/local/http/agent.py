"""Every sandbox's agent (``/sandboxes/{sid}``), behind that sandbox's own token."""

from __future__ import annotations

from aiohttp import web

from ..errors import bad_request
from ..runtime.launch import StartSpec
from ..runtime.output import cap_list_output, read_range
from ..runtime.tasks import to_the_end
from ..service.dialect import Dialect
from ..service.render import MASK
from ..state.records import SandboxRecord
from ..version import __version__
from . import agent_strict as strict
from . import files
from .agent_requests import authorize, code_spec, command_spec
from .common import Handler, json_answer, read_body, state
from .middleware import with_headers
from .params import (
    opt_env,
    opt_str,
    opt_str_list,
    query_float,
    query_int,
)
from .stream import commands_stream, execute_stream, process_stream
from .terminal import terminal as terminal_route

__all__ = ["FEATURES", "make_agent_app"]

FEATURES = {
    "process_get": True,
    "output_offsets": True,
    "process_delete": True,
    "long_poll": True,
    "list_since": True,
    "idempotency_keys": True,
    "output_push": True,
    "execute_stream": True,
    "env_delete_keys": True,
    "list_terminal": True,
    "background_workdir": True,
}

_MAX_WAIT = 30.0
_DEFAULT_MAX_BYTES = 1024 * 1024
_MAX_MAX_BYTES = 8 * 1024 * 1024
_MAX_BACKGROUND_TIMEOUT = 7 * 24 * 3600.0


@web.middleware
async def _token_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    sandbox_id = request.match_info.get("sid")
    if sandbox_id is None:  # no route matched: the root answers 404/405
        return await handler(request)
    _sbx, headers = authorize(request, sandbox_id)
    return await with_headers(request, handler, headers)


def _sandbox(request: web.Request) -> SandboxRecord:
    # The middleware authenticated the request for this sandbox already.
    return state(request).sandboxes.get(request.match_info["sid"])


async def agent_health(request: web.Request) -> web.Response:
    sbx = _sandbox(request)
    return json_answer(
        {
            "status": "healthy",
            "version": __version__,
            "features": dict(FEATURES),
            "sandbox_id": sbx.id,
            "languages": sorted(state(request).catalog.languages),
        }
    )


async def execute(request: web.Request) -> web.Response:
    spec = code_spec(request, await read_body(request), default_timeout=60, maximum=300)
    return json_answer(await state(request).foreground.run_sync(_sandbox(request), spec))


async def execute_background(request: web.Request) -> web.Response:
    body = await read_body(request)
    spec = code_spec(
        request, body, default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT, background=True
    )
    return await _start(request, spec)


async def commands_run(request: web.Request) -> web.Response:
    spec = command_spec(request, await read_body(request), default_timeout=30, maximum=3600)
    return json_answer(await state(request).foreground.run_sync(_sandbox(request), spec))


async def commands_background(request: web.Request) -> web.Response:
    body = await read_body(request)
    spec = command_spec(request, body, default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT)
    return await _start(request, spec)


async def _start(request: web.Request, spec: StartSpec) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise bad_request("header 'Idempotency-Key' must be 1 to 255 characters")
    # The start is shielded inside: a client that goes away leaves a tracked process.
    return json_answer(await state(request).processes.start(_sandbox(request), spec, key))


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


def _only(request: web.Request) -> bool:
    """``only=terminal``: list (and wake a long poll for) processes in a terminal state only."""
    raw = request.query.get("only")
    if raw is None or raw == "all":
        return False
    if raw == "terminal":
        return True
    raise bad_request("query parameter 'only' must be 'terminal' or 'all'")


async def list_processes(request: web.Request) -> web.Response:
    app_state = state(request)
    sbx = _sandbox(request)
    output = _query_bool(request, "output", True)
    since = query_int(request.query, "since", minimum=0, maximum=2**63 - 1)
    wait = query_float(request.query, "wait", maximum=_MAX_WAIT)
    terminal = _only(request)
    if since is not None and wait is not None:
        await app_state.changes.wait_for_change(sbx, since, wait, terminal=terminal)
    records = app_state.processes.of_sandbox(sbx.id)
    if since is not None:
        records = [rec for rec in records if rec.version > since]
    if terminal:
        records = [rec for rec in records if rec.finished]
    processes = [app_state.renderer.process(rec, output=output) for rec in records]
    cap_list_output(processes)
    return json_answer({"processes": processes, "count": len(processes), "version": sbx.version})


async def get_process(request: web.Request) -> web.Response:
    app_state = state(request)
    sbx = _sandbox(request)
    rec = app_state.processes.get(sbx.id, request.match_info["pid"])
    query = request.query
    stdout_offset = query_int(query, "stdout_offset", minimum=0, maximum=2**62)
    stderr_offset = query_int(query, "stderr_offset", minimum=0, maximum=2**62)
    max_bytes = query_int(query, "max_bytes", minimum=1, maximum=_MAX_MAX_BYTES)
    wait = query_float(query, "wait", maximum=_MAX_WAIT)
    with_offsets = stdout_offset is not None or stderr_offset is not None
    offsets = (stdout_offset or 0, stderr_offset or 0) if with_offsets else None
    if wait is not None:
        await app_state.changes.wait_for_process(rec, wait, offsets)
    data = app_state.renderer.process(rec, output=offsets is None)
    if offsets is not None:
        final = rec.finished
        for stream, offset in zip(("stdout", "stderr"), offsets, strict=True):
            text, next_offset, size = read_range(
                app_state.layout.output(rec.sandbox_id, rec.process_id, stream),
                offset,
                max_bytes or _DEFAULT_MAX_BYTES,
                final=final,
            )
            data[stream] = text
            data[f"{stream}_next_offset"] = next_offset
            data[f"{stream}_size"] = size
    return json_answer(data)


async def delete_process(request: web.Request) -> web.Response:
    pid = request.match_info["pid"]
    state(request).processes.delete(_sandbox(request).id, pid)
    return json_answer({"process_id": pid, "status": "deleted"})


async def _kill(request: web.Request, process_id: str) -> web.Response:
    rec = await state(request).processes.kill(_sandbox(request).id, process_id)
    return json_answer(
        {
            "process_id": rec.process_id,
            "status": rec.status,
            "message": f"process {rec.process_id} {rec.status}; its process group was ended",
        }
    )


async def kill_by_body(request: web.Request) -> web.Response:
    body = await read_body(request)
    process_id = opt_str(body, "process_id") or request.query.get("process_id")
    if not process_id:
        raise bad_request("'process_id' is required")
    return await _kill(request, process_id)


async def kill_by_path(request: web.Request) -> web.Response:
    return await _kill(request, request.match_info["pid"])


async def os_processes(request: web.Request) -> web.Response:
    found = state(request).processes.os_processes(_sandbox(request).id)
    return json_answer({"processes": found, "count": len(found)})


def _base_env(request: web.Request, sbx: SandboxRecord) -> dict[str, str]:
    return state(request).launcher.process_env(sbx.id, {}, {})


async def get_env(request: web.Request) -> web.Response:
    sbx = _sandbox(request)
    return json_answer(state(request).renderer.env_vars(sbx, _base_env(request, sbx)))


async def _set_env(request: web.Request, *, merge: bool) -> web.Response:
    body = await read_body(request)
    if body.get("env_vars") is None:
        raise bad_request("'env_vars' is required")
    sbx = _sandbox(request)
    wanted = opt_env(body, "env_vars")
    # A client may send back what GET /env showed (the official SDK's delete does): a masked
    # value keeps the stored secret, and an unchanged base variable is not made the sandbox's.
    base = _base_env(request, sbx)
    kept: dict[str, str] = {}
    for name, value in wanted.items():
        if value == MASK and name in sbx.env_vars:
            kept[name] = sbx.env_vars[name]
        elif name in base and base[name] == value and name not in sbx.env_vars:
            continue
        else:
            kept[name] = value
    state(request).sandboxes.set_env(sbx, kept, merge=merge)
    return web.Response(status=204)


async def put_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=False)


async def patch_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=True)


async def delete_env(request: web.Request) -> web.Response:
    body = await read_body(request)
    names: list[str] | None = None
    for key in ("keys", "names", "env_vars"):
        value = body.get(key)
        if value is None:
            continue
        names = list(value) if isinstance(value, dict) else opt_str_list(body, key)
        break
    state(request).sandboxes.delete_env(_sandbox(request), names)
    return web.Response(status=204)


async def execute_async(request: web.Request) -> web.Response:
    body = await read_body(request)
    spec = code_spec(request, body, default_timeout=1800, maximum=_MAX_BACKGROUND_TIMEOUT)
    hooks = state(request).webhooks
    callback = hooks.callback(body)  # refused before anything runs
    return json_answer(await to_the_end(hooks.submit(_sandbox(request), spec, callback)))


def make_agent_app(dialect: Dialect) -> web.Application:
    """The ``/sandboxes`` sub-application (the root app holds the shared state)."""
    if dialect.strict:
        return make_strict_agent_app(dialect)
    app = web.Application(middlewares=[_token_auth])
    agent = "/{sid}"
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
    app.router.add_get(agent + "/execute/stream", execute_stream)
    app.router.add_get(agent + "/commands/stream", commands_stream)
    app.router.add_get(agent + "/execute/processes/{pid}/stream", process_stream)
    app.router.add_get(agent + "/terminal", terminal_route)
    app.router.add_get(agent + "/env", get_env)
    app.router.add_put(agent + "/env", put_env)
    app.router.add_patch(agent + "/env", patch_env)
    app.router.add_delete(agent + "/env", delete_env)
    _add_file_routes(app, agent)
    app.router.add_post(agent + "/execute/async", execute_async)
    return app


def _add_file_routes(app: web.Application, agent: str) -> None:
    """The ``/files/*`` routes, the same in every dialect."""
    app.router.add_get(agent + "/files/read", files.read_file)
    app.router.add_post(agent + "/files/write", files.write_file)
    app.router.add_get(agent + "/files/list", files.list_files)
    app.router.add_get(agent + "/files/exists", files.file_exists)
    app.router.add_delete(agent + "/files/remove", files.remove_file)
    app.router.add_post(agent + "/files/mkdir", files.make_dir)
    app.router.add_post(agent + "/files/upload", files.upload_file)
    app.router.add_get(agent + "/files/download", files.download_file)


def make_strict_agent_app(dialect: Dialect) -> web.Application:
    """The agent of ``hopx`` and ``openapi``: the documented routes only, no extensions."""
    app = web.Application(middlewares=[strict.strict_auth])
    agent = "/{sid}"
    app.router.add_get(agent + "/health", strict.strict_health)
    app.router.add_post(agent + "/execute", execute)
    app.router.add_post(agent + "/execute/background", strict.strict_background)
    app.router.add_get(agent + "/execute/processes", strict.strict_list)
    app.router.add_delete(agent + "/execute/kill", strict.strict_kill)
    if dialect.kill_by_path:
        app.router.add_post(agent + "/execute/kill/{pid}", strict.strict_kill_by_path)
    if dialect.kill_processes_path:
        app.router.add_post(agent + "/processes/{pid}/kill", strict.strict_kill_by_path)
    app.router.add_get(agent + "/processes", os_processes)
    app.router.add_post(agent + "/commands/run", strict.strict_commands_run)
    app.router.add_post(agent + "/commands/background", strict.strict_commands_background)
    app.router.add_get(agent + "/execute/stream", execute_stream)
    app.router.add_get(agent + "/commands/stream", commands_stream)
    app.router.add_get(agent + "/terminal", terminal_route)
    app.router.add_get(agent + "/env", get_env)
    app.router.add_put(agent + "/env", strict.strict_put_env)
    app.router.add_patch(agent + "/env", strict.strict_patch_env)
    app.router.add_delete(agent + "/env", strict.strict_delete_env)
    _add_file_routes(app, agent)
    if dialect.async_route:
        app.router.add_post(agent + "/execute/async", strict.strict_execute_async)
    return app
