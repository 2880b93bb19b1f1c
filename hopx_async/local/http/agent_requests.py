"""What every agent route reads from a request: the sandbox its token opens, and start specs.

Shared by the HTTP routes (``agent``) and the WebSocket routes (``stream``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..errors import ApiError, PlainAnswer, bad_request
from ..runtime.launch import StartSpec
from ..service.dialect import Dialect
from ..service.tokens import TokenError, is_header_text
from ..state.records import SandboxRecord
from .common import bearer, state
from .params import opt_env, opt_number, opt_str, opt_str_list, req_str

__all__ = ["authorize", "code_spec", "command_spec"]

_SHELLS = frozenset({"bash", "sh", "/bin/bash", "/bin/sh", "/usr/bin/bash"})


def authorize(request: web.Request, sandbox_id: str | None) -> tuple[SandboxRecord, dict[str, str]]:
    """The sandbox the request's token opens, and the rate-limit headers to answer with.

    ``sandbox_id`` is the one named in the path; at the server's root (``None``) the token
    names it. Raises 401 (no or bad token), 403 (another sandbox's token), 409 (paused).
    """
    app_state = state(request)
    token = bearer(request)
    if token is None:
        raise ApiError(
            401,
            "AUTHENTICATION_REQUIRED" if app_state.dialect.extensions else "",
            "this sandbox's auth_token is required (Authorization: Bearer TOKEN)",
        )
    if not is_header_text(token):
        raise _token_error(app_state.dialect, "invalid token: malformed token")
    try:
        token_sandbox = app_state.signer.verify(token)
    except TokenError as exc:
        raise _token_error(app_state.dialect, f"invalid token: {exc}") from None
    if sandbox_id is not None and token_sandbox != sandbox_id:
        raise ApiError(403, "FORBIDDEN", "this token belongs to another sandbox")
    sbx = app_state.sandboxes.get(token_sandbox)
    if sbx.status == "paused":
        paused = app_state.dialect.paused_answer
        if paused != 409:  # the service's agent is unreachable while paused
            raise PlainAnswer(int(paused), "Bad Gateway" if paused == 502 else "Unavailable")
        raise ApiError(
            409,
            "CONFLICT",
            f"sandbox {sbx.id} is paused; resume it (POST /v1/sandboxes/{sbx.id}/resume)",
        )
    limiter = app_state.agent_limiter
    headers = {} if limiter is None else limiter.hit(f"sbx:{sbx.id}")
    return sbx, headers


def _token_error(dialect: Dialect, message: str) -> ApiError:
    return ApiError(401, dialect.token_error_code or "", message)


def _working_dir(dialect: Dialect, body: Mapping[str, Any]) -> str | None:
    for key in dialect.workdir_keys:
        value = opt_str(body, key)
        if value is not None:
            return value
    return None


def code_spec(
    request: web.Request,
    body: Mapping[str, Any],
    *,
    default_timeout: float,
    maximum: float,
    background: bool = False,
) -> StartSpec:
    """A start of ``code`` in ``language`` from a request body.

    A background start has no working directory unless the dialect gives it one.
    """
    code = req_str(body, "code")
    app_state = state(request)
    dialect = app_state.dialect
    language = app_state.catalog.resolve_language(opt_str(body, "language") or "python")
    with_dir = dialect.background_workdir or not background
    return StartSpec(
        kind="code",
        language=language,
        timeout=opt_number(body, "timeout", default_timeout, maximum=maximum),
        working_dir=_working_dir(dialect, body) if with_dir else None,
        env=opt_env(body, "env"),
        name=opt_str(body, "name"),
        code=code,
    )


def command_spec(
    request: web.Request, body: Mapping[str, Any], *, default_timeout: float, maximum: float
) -> StartSpec:
    """A start of ``command`` (a shell line, or a program with ``args``) from a request body."""
    dialect = state(request).dialect
    command = req_str(body, "command")
    args = opt_str_list(body, "args")
    if args is None and not dialect.command_alone_in_shell:
        args = []  # one program name, run without a shell
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
        working_dir=_working_dir(dialect, body),
        env=opt_env(body, "env"),
        name=opt_str(body, "name"),
        argv=argv,
        command=text,
    )
