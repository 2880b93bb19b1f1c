"""The wire format, with no I/O: request bodies, start and sandbox answers, kill forms.

Process lists are read in :mod:`._lists`, output by offsets in :mod:`._output`.

Everything here is a plain function or a small class over plain data, so that the classes
doing I/O (:mod:`._control`, :mod:`._agent`) stay thin and these rules are tested directly.

>>> segment("../templates/base")
'..%2Ftemplates%2Fbase'
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import attrs

from . import _validation as validate
from ._fields import parse_time
from ._models import ProcessStatus, SandboxInfo

__all__ = [
    "BACKGROUND_WORKDIR",
    "KILL_FORMS",
    "PROCESS_STATUSES",
    "TIMEOUT_EXIT_CODE",
    "StartAnswer",
    "agent_base",
    "background_code_body",
    "create_body",
    "execution_body",
    "kill_form_missing",
    "kill_request",
    "segment",
    "start_answer",
    "status_filter",
    "timed_out_result",
    "token_of",
    "with_status",
]

#: the kill forms agents answer, the documented one first
KILL_FORMS = ("DELETE /execute/kill", "POST /execute/kill/{id}", "POST /processes/{id}/kill")
#: the statuses a background process can have, as documented
PROCESS_STATUSES = (
    ProcessStatus.QUEUED,
    ProcessStatus.RUNNING,
    ProcessStatus.COMPLETED,
    ProcessStatus.FAILED,
    ProcessStatus.KILLED,
    ProcessStatus.TIMEOUT,
)


def segment(value: str, argument: str = "id") -> str:
    """One path segment, percent-encoded whole, so that an id never leaves its resource.

    ``/``, ``?`` and ``#`` are encoded; ``.`` and ``..`` alone (which URL normalisation
    resolves even when encoded) are refused with a :class:`ValidationError`.
    """
    if value in (".", ".."):
        raise validate.ValidationError(argument, f"{value!r} is not an id")
    return quote(value, safe="")


# --------------------------------------------------------------------------- requests
def execution_body(
    field: str,
    text: Any,
    language: Any,
    timeout: Any,
    env: Any,
    working_dir: Any,
    name: Any = None,
    *,
    sync: bool = False,
) -> tuple[dict[str, Any], float]:
    """Check the arguments every execution call shares and build its request body.

    ``language`` None: none sent (commands); ``sync``: the timeout is capped at the service's
    limit for synchronous runs and streams, else at the documented 7 days of a process.
    The lifetime is sent in whole seconds (at least 1).
    """
    body: dict[str, Any] = {field: validate.non_empty_str(field, text)}
    if language is not None:
        body["language"] = validate.language(language)
    maximum = validate.MAX_SYNC_TIMEOUT if sync else validate.MAX_PROCESS_TIMEOUT
    seconds = validate.positive_number("timeout", timeout, maximum=maximum)
    body["timeout"] = int(max(1, round(seconds)))
    env_vars = validate.env_vars("env", env)
    if env_vars:
        body["env"] = env_vars
    if validate.optional_str("name", name):
        body["name"] = name
    if validate.optional_str("working_dir", working_dir):
        # the OpenAPI and the official SDK read ``workdir``, the documentation ``working_dir``
        body["workdir"] = body["working_dir"] = working_dir
    return body, seconds


#: the feature of agents whose ``/execute/background`` honours a working directory
BACKGROUND_WORKDIR = "background_workdir"


def background_code_body(body: Mapping[str, Any], honoured: bool) -> dict[str, Any]:
    """The ``/execute/background`` body, its working directory applied where it holds.

    The service's background request has no working-directory field, so a directory sent
    there is ignored silently. Unless the agent advertises ``background_workdir``
    (``honoured``), bash code gets a ``cd`` prefix (the keys are dropped, so a relative
    directory is not applied twice) and any other language is refused with a
    :class:`ValidationError` instead of running in ``/workspace``.

    >>> background_code_body({"code": "pwd", "language": "bash", "workdir": "a b",
    ...                       "working_dir": "a b"}, False)["code"]
    "cd -- 'a b' || exit 1\\npwd"
    """
    out = dict(body)
    directory = out.get("working_dir")
    if directory is None or honoured:
        return out
    if out.get("language") != "bash":
        raise validate.ValidationError(
            "working_dir",
            "this server runs background code in /workspace whatever working directory is "
            "sent (it does not advertise background_workdir); for another directory use bash "
            "code, or commands.run(..., background=True, working_dir=...), which honours it",
        )
    del out["working_dir"], out["workdir"]
    out["code"] = f"cd -- {shlex.quote(directory)} || exit 1\n{out['code']}"
    return out


#: the template of a sandbox created without one (as E2B's ``Sandbox()`` needs no arguments)
DEFAULT_TEMPLATE = "code-interpreter"


def create_body(
    template: str | None,
    template_id: str | None,
    region: str | None,
    timeout_seconds: int | None,
    internet_access: bool | None,
    env_vars: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The sandbox create request body, validated before any I/O (neither ``template``
    nor ``template_id``: :data:`DEFAULT_TEMPLATE`)."""
    if template is None and template_id is None:
        template = DEFAULT_TEMPLATE
    if template is not None and template_id is not None:
        raise validate.ValidationError("template", "give template or template_id, not both")
    body: dict[str, Any] = {}
    if template is not None:
        body["template_name"] = validate.non_empty_str("template", template)
    if template_id is not None:
        body["template_id"] = validate.non_empty_str("template_id", template_id)
    if region is not None:
        body["region"] = validate.non_empty_str("region", region)
    if timeout_seconds is not None:
        body["timeout_seconds"] = validate.positive_int("timeout_seconds", timeout_seconds)
    if internet_access is not None:
        if not isinstance(internet_access, bool):
            raise validate.ValidationError(
                "internet_access", f"expected True or False, got {internet_access!r}"
            )
        body["internet_access"] = internet_access
    env = validate.env_vars("env_vars", env_vars)
    if env:
        body["env_vars"] = env
    return body


def status_filter(status: str | Iterable[str] | None) -> frozenset[str] | None:
    """The statuses asked for by ``list_processes(status=...)``; documented ones only.

    >>> sorted(status_filter(["running", "queued"]))
    ['queued', 'running']
    """
    if status is None:
        return None
    items = [status] if isinstance(status, str) else list(status)
    if not items:
        raise validate.ValidationError("status", "expected at least one status")
    for item in items:
        if item not in PROCESS_STATUSES:
            raise validate.ValidationError(
                "status", f"expected one of {', '.join(PROCESS_STATUSES)}; got {item!r}"
            )
    return frozenset(items)


def kill_request(
    form: str, process_id: str
) -> tuple[str, str, dict[str, str] | None, dict[str, str] | None]:
    """(method, path, query, body) of one kill form for ``process_id``.

    ``DELETE /execute/kill`` carries the id in both the query (the OpenAPI) and the JSON body
    (the documentation), so that either reading finds it.

    >>> kill_request("POST /execute/kill/{id}", "p/1")
    ('POST', '/execute/kill/p%2F1', None, None)
    >>> kill_request("DELETE /execute/kill", "p1")
    ('DELETE', '/execute/kill', {'process_id': 'p1'}, {'process_id': 'p1'})
    """
    method, path = form.split(" ", 1)
    if "{id}" in path:
        return method, path.replace("{id}", segment(process_id)), None, None
    return method, path, {"process_id": process_id}, {"process_id": process_id}


#: error codes of a 404 that mean the route is missing, not the process
ROUTE_MISS_CODES = (None, "NOT_FOUND")


def kill_form_missing(status: int, code: str | None) -> bool:
    """Whether an error answer to a kill form means "try the next form".

    A 405, a 400 (the form did not deliver the id where this server reads it) and a 404
    without a code (or ``NOT_FOUND``, a route miss) do; a 404 that names the process
    (``RESOURCE_NOT_FOUND``, ``PROCESS_NOT_FOUND``) is the process's own answer.

    >>> kill_form_missing(404, "PROCESS_NOT_FOUND"), kill_form_missing(400, "INVALID_REQUEST")
    (False, True)
    """
    return status in (400, 405) or (status == 404 and code in ROUTE_MISS_CODES)


# ---------------------------------------------------------------------------- answers
def agent_base(info: SandboxInfo) -> str | None:
    """The agent's base URL from a sandbox record, or None when it names none."""
    host = info.public_host or info.direct_url
    if not host:
        return None
    if not host.startswith(("http://", "https://")):
        host = "https://" + host
    return host.rstrip("/")


def token_of(data: Any) -> tuple[str, datetime | None] | None:
    """(auth_token, token_expires_at) from a sandbox or token answer, if it has a token."""
    if not isinstance(data, Mapping):
        return None
    token = data.get("auth_token")
    if not isinstance(token, str) or not token:
        return None
    return token, parse_time(data.get("token_expires_at"))


def with_status(info: SandboxInfo, data: Any, default: str) -> SandboxInfo:
    """``info`` with the status of a pause/resume answer (or ``default``)."""
    status = data.get("status") if isinstance(data, Mapping) else None
    return attrs.evolve(info, status=str(status or default))


@attrs.frozen
class StartAnswer:
    """What a start (``/execute/background``, ``/commands/background``) answered."""

    process_id: str
    execution_id: str | None
    name: str | None
    status: str
    language: str | None
    timeout: int | None
    version: int | None


def start_answer(data: Any, body: Mapping[str, Any], language: str) -> StartAnswer | None:
    """Parse a start answer (JSON, or the older ``"...started: <id>"`` text); None if no id."""
    fields: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    process_id = fields.get("process_id") or fields.get("id")
    if not process_id and isinstance(data, str) and ":" in data:
        process_id = data.rsplit(":", 1)[1].strip()
    if not process_id:
        return None
    timeout = fields.get("timeout", body.get("timeout"))
    version = fields.get("version")
    return StartAnswer(
        process_id=str(process_id),
        execution_id=_opt_str(fields.get("execution_id")),
        name=_opt_str(fields.get("name")) or body.get("name"),
        status=str(fields.get("status") or ProcessStatus.QUEUED),
        language=_opt_str(fields.get("language")) or language,
        timeout=timeout if isinstance(timeout, int) else None,
        version=version if isinstance(version, int) else None,
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


#: the exit code of a synchronous execution ended by its timeout (as ``timeout(1)`` uses)
TIMEOUT_EXIT_CODE = 124


def timed_out_result(body: Any, message: str) -> dict[str, Any]:
    """The result of a synchronous execution that a server answered 408: ``success`` false,
    the partial output it sent, a non-zero exit code, and ``message`` closing stderr."""
    data = body if isinstance(body, Mapping) else {}
    stdout = data.get("stdout")
    stderr = data.get("stderr")
    err = stderr if isinstance(stderr, str) else ""
    if err and not err.endswith("\n"):
        err += "\n"
    exit_code = data.get("exit_code")
    return {
        "success": False,
        "stdout": stdout if isinstance(stdout, str) else "",
        "stderr": f"{err}{message}\n",
        "exit_code": exit_code if isinstance(exit_code, int) and exit_code else TIMEOUT_EXIT_CODE,
        "execution_time": data.get("execution_time"),
    }
