"""The agent's handlers in the strict dialects (``hopx``, ``openapi``): documented shapes only.

Each reads only the documented fields (unknown ones are ignored) and answers only the
documented ones; which of them exist is decided once, when ``agent.make_agent_app`` builds
the routes from the :class:`~hopx_async.local.service.dialect.Dialect`.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from aiohttp import web

from ..errors import ApiError, PlainAnswer, bad_request
from ..runtime.output import read_tail
from ..runtime.tasks import to_the_end
from ..service.dialect import Dialect
from ..state.records import ProcessRecord, SandboxRecord, iso
from ..version import __version__
from .agent_requests import authorize, code_spec, command_spec
from .common import Handler, json_answer, read_body, state
from .middleware import with_headers
from .params import opt_env, opt_str

__all__ = [
    "strict_auth",
    "strict_background",
    "strict_commands_background",
    "strict_commands_run",
    "strict_delete_env",
    "strict_execute_async",
    "strict_health",
    "strict_kill",
    "strict_kill_by_path",
    "strict_list",
    "strict_patch_env",
    "strict_put_env",
]

_MAX_BACKGROUND_TIMEOUT = 7 * 24 * 3600.0
_boot_turns = itertools.count()
_COMMAND_FIELDS = frozenset({"success", "stdout", "stderr", "exit_code", "execution_time"})


def _booting(sbx: SandboxRecord, dialect: Dialect) -> PlainAnswer | None:
    """The answer of an agent that is not ready yet, or None once it is."""
    if time.time() - sbx.created_at >= dialect.boot_seconds:
        return None
    answers = dialect.boot_answers
    status = answers[next(_boot_turns) % len(answers)]
    texts = {401: "Unauthorized", 404: "404 page not found"}
    return PlainAnswer(status, texts.get(status, "Bad Gateway"))


@web.middleware
async def strict_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    sandbox_id = request.match_info.get("sid")
    if sandbox_id is None:  # no route matched: the root answers 404/405
        return await handler(request)
    app_state = state(request)
    if app_state.dialect.boot_seconds > 0:
        try:
            booting = _booting(app_state.sandboxes.get(sandbox_id), app_state.dialect)
        except ApiError:
            booting = None  # an unknown sandbox: the token check answers
        if booting is not None:
            raise booting
    _sbx, headers = authorize(request, sandbox_id)
    return await with_headers(request, handler, headers)


def _sandbox(request: web.Request) -> SandboxRecord:
    return state(request).sandboxes.get(request.match_info["sid"])


async def strict_health(request: web.Request) -> web.Response:
    return json_answer({"status": "healthy", "version": __version__})


def render_process(dialect: Dialect, rec: ProcessRecord, layout_output: Any) -> dict[str, Any]:
    """A process as the strict dialect lists it."""
    status = dialect.status(rec.status, rec.exit_code)
    start = rec.started_at if rec.started_at is not None else rec.created_at
    end = rec.completed_at
    elapsed = rec.duration if rec.duration is not None else max(0.0, (end or time.time()) - start)
    data: dict[str, Any] = {
        "process_id": rec.process_id,
        "execution_id": rec.execution_id,
        "name": rec.name,
        "status": status,
        "language": rec.language,
    }
    if dialect.openapi_times:  # Go's omitempty: no end, duration or exit code while running
        data["pid"] = rec.pid
        data["start_time"] = iso(start)
        if end is not None:
            data["end_time"] = iso(end)
            data["duration"] = round(elapsed, 4)
        if rec.exit_code is not None:
            data["exit_code"] = rec.exit_code
    else:
        data["started_at"] = iso(start)
        data["completed_at"] = iso(end)
        data["exit_code"] = rec.exit_code
        data["execution_time"] = round(elapsed, 4)
    if dialect.list_output:  # the output so far, cut to its tail with no flag
        for stream in ("stdout", "stderr"):
            path = layout_output(rec.sandbox_id, rec.process_id, stream)
            data[stream] = read_tail(path, dialect.list_output_cap)[0]
    return data


async def strict_list(request: web.Request) -> web.Response:
    app_state = state(request)
    dialect, output = app_state.dialect, app_state.layout.output
    records = app_state.processes.of_sandbox(_sandbox(request).id)
    processes = [render_process(dialect, rec, output) for rec in records]
    answer: dict[str, Any] = {"processes": processes, "count": len(processes)}
    if dialect.openapi_times:
        answer["timestamp"] = iso(time.time())
    return json_answer(answer)


async def _kill(request: web.Request, process_id: str) -> web.Response:
    try:
        rec = await state(request).processes.kill(_sandbox(request).id, process_id)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(404, "RESOURCE_NOT_FOUND", exc.message) from None
        raise
    return json_answer(
        {
            "process_id": rec.process_id,
            "status": "killed",
            "message": f"process {rec.process_id} killed",
        }
    )


async def strict_kill(request: web.Request) -> web.Response:
    process_id = request.query.get("process_id")
    if not process_id and state(request).dialect.kill_id_in_body:
        process_id = opt_str(await read_body(request), "process_id")
    if not process_id:
        raise bad_request("'process_id' is required")
    return await _kill(request, process_id)


async def strict_kill_by_path(request: web.Request) -> web.Response:
    return await _kill(request, request.match_info["pid"])


async def strict_background(request: web.Request) -> web.Response:
    body = await read_body(request)
    spec = code_spec(
        request, body, default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT, background=True
    )
    started = await state(request).processes.start(_sandbox(request), spec, None)
    return json_answer({k: started[k] for k in ("process_id", "execution_id", "status")})


async def strict_commands_background(request: web.Request) -> web.Response:
    spec = command_spec(
        request, await read_body(request), default_timeout=300, maximum=_MAX_BACKGROUND_TIMEOUT
    )
    started = await state(request).processes.start(_sandbox(request), spec, None)
    return json_answer({k: started[k] for k in ("process_id", "execution_id", "status")})


async def strict_commands_run(request: web.Request) -> web.Response:
    app_state = state(request)
    spec = command_spec(request, await read_body(request), default_timeout=30, maximum=3600)
    result = await app_state.foreground.run_sync(_sandbox(request), spec)
    exit_code = result.get("exit_code")
    if app_state.dialect.command_failure_500 and exit_code != 0:
        failed = {"stdout": result.get("stdout", ""), "stderr": result.get("stderr", "")}
        return json_answer({**failed, "exit_code": exit_code}, 500)
    return json_answer({k: v for k, v in result.items() if k in _COMMAND_FIELDS})


async def _set_env(request: web.Request, *, merge: bool) -> web.Response:
    body = await read_body(request)
    if body.get("env_vars") is None:
        raise bad_request("'env_vars' is required")
    wanted = opt_env(body, "env_vars")  # stored as given, ***MASKED*** included
    merge = merge and body.get("merge") is True
    state(request).sandboxes.set_env(_sandbox(request), wanted, merge=merge)
    return web.Response(status=204)


async def strict_put_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=False)


async def strict_patch_env(request: web.Request) -> web.Response:
    return await _set_env(request, merge=True)


async def strict_delete_env(request: web.Request) -> web.Response:
    state(request).sandboxes.delete_env(_sandbox(request), None)  # clears every variable
    return web.Response(status=204)


async def strict_execute_async(request: web.Request) -> web.Response:
    body = await read_body(request)
    spec = code_spec(request, body, default_timeout=1800, maximum=_MAX_BACKGROUND_TIMEOUT)
    hooks = state(request).webhooks
    callback = hooks.callback(body)  # refused before anything runs
    answer = await to_the_end(hooks.submit(_sandbox(request), spec, callback))
    return json_answer({k: answer[k] for k in ("execution_id", "status", "callback_url")})
