"""The wire format, with no I/O: request bodies, answer parsing, kill forms, output cursors.

Everything here is a plain function or a small class over plain data, so that the classes
doing I/O (:mod:`._control`, :mod:`._agent`) stay thin and these rules are tested directly.

>>> segment("../templates/base")
'..%2Ftemplates%2Fbase'
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import attrs

from . import _validation as validate
from ._fields import parse_time
from ._models import ProcessInfo, ProcessStatus, SandboxInfo
from ._results import OutputChunk

__all__ = [
    "RecordKey",
    "changed_processes",
    "raw_process_id",
    "raw_process_list",
    "record_key",
    "KILL_FORMS",
    "PROCESS_STATUSES",
    "STREAMS",
    "TIMEOUT_EXIT_CODE",
    "OutputCursor",
    "StartAnswer",
    "agent_base",
    "create_body",
    "execution_body",
    "kill_request",
    "list_version",
    "next_cursor",
    "process_list",
    "segment",
    "start_answer",
    "status_filter",
    "pushed_chunk",
    "status_only",
    "timed_out_result",
    "token_of",
    "with_status",
]

#: the kill forms agents answer, the documented one first
KILL_FORMS = ("DELETE /execute/kill", "POST /execute/kill/{id}", "POST /processes/{id}/kill")
STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")
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
    limit for synchronous runs and streams. The lifetime is sent in whole seconds (at least 1).
    """
    body: dict[str, Any] = {field: validate.non_empty_str(field, text)}
    if language is not None:
        body["language"] = validate.language(language)
    maximum = validate.MAX_SYNC_TIMEOUT if sync else None
    seconds = validate.positive_number("timeout", timeout, maximum=maximum)
    body["timeout"] = int(max(1, round(seconds)))
    env_vars = validate.env_vars("env", env)
    if env_vars:
        body["env"] = env_vars
    if validate.optional_str("name", name):
        body["name"] = name
    if validate.optional_str("working_dir", working_dir):
        body["working_dir"] = working_dir
    return body, seconds


def create_body(
    template: str | None,
    template_id: str | None,
    region: str | None,
    timeout_seconds: int | None,
    internet_access: bool | None,
    env_vars: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The sandbox create request body, validated before any I/O."""
    if template is None and template_id is None:
        raise validate.ValidationError(
            "template", "give a template name (e.g. 'code-interpreter') or template_id"
        )
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


def kill_request(form: str, process_id: str) -> tuple[str, str, dict[str, str] | None]:
    """(method, path, body) of one kill form for ``process_id``.

    >>> kill_request("POST /execute/kill/{id}", "p/1")
    ('POST', '/execute/kill/p%2F1', None)
    """
    method, path = form.split(" ", 1)
    if "{id}" in path:
        return method, path.replace("{id}", segment(process_id)), None
    return method, path, {"process_id": process_id}


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


def raw_process_list(data: Any) -> list[Mapping[str, Any]]:
    """The raw process objects of ``{"processes": [...]}``, ``{"data": [...]}`` or ``[...]``."""
    items: Any = data
    if isinstance(data, Mapping):
        items = data.get("processes", data.get("data", []))
    if not isinstance(items, list):
        return []
    # the usual case: every item is a dict (an exact type check is cheaper than the ABC's)
    if all(item.__class__ is dict for item in items):
        return items
    return [item for item in items if isinstance(item, Mapping)]


def process_list(data: Any) -> list[ProcessInfo]:
    """Read the process list from ``{"processes": [...]}``, ``{"data": [...]}`` or ``[...]``."""
    return [ProcessInfo.from_wire(item) for item in raw_process_list(data)]


#: a record's summary: a hash, so that a sandbox's keys cost one small int per process
RecordKey = int


def raw_process_id(item: Mapping[str, Any]) -> str:
    """The id of a raw process object, as :meth:`ProcessInfo.from_wire` reads it."""
    value = item.get("process_id")
    if value is None or value == "":
        value = item.get("id")
    return str(value or "")


def record_key(item: Mapping[str, Any]) -> RecordKey:
    """A cheap summary of a raw process object that changes when its status or output does
    (a hash of its status, version, exit code, output lengths and end time).

    >>> record_key({"status": "running", "stdout": "ab"}) == record_key({"status": "running",
    ...     "stdout": "ab", "pid": 7})
    True
    >>> record_key({"status": "running"}) == record_key({"status": "completed"})
    False
    """
    get = item.get
    out, err = get("stdout"), get("stderr")
    ended = get("completed_at")
    fields = (
        get("status"),
        get("version"),
        get("exit_code"),
        len(out) if isinstance(out, str) else out,
        len(err) if isinstance(err, str) else err,
        get("stdout_truncated"),
        get("stderr_truncated"),
        get("end_time") if ended is None and "completed_at" not in item else ended,
    )
    try:
        return hash(fields)  # JSON scalars (the usual case) hash as they are
    except TypeError:  # a list or an object where a scalar belongs
        return hash(tuple(_scalar(value) for value in fields))


def _scalar(value: Any) -> object:
    """``value`` if JSON-scalar (hashable), else its repr."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return repr(value)


def changed_processes(
    items: Iterable[Mapping[str, Any]],
    keys: Mapping[str, RecordKey],
    waited: Container[str] = (),
    held: Container[str] | None = None,
) -> tuple[list[ProcessInfo], dict[str, RecordKey]]:
    """Models for the raw records that changed since ``keys``, or that ended and are in
    ``waited``; and the keys of every record listed (to pass next time: they hold only the ids
    listed, so processes that disappeared drop out).

    With ``held`` (the ids somebody holds a handle on), a record in neither ``held`` nor
    ``waited`` is skipped: no key, no model (a handle made later gets it from the next list).

    >>> infos, keys = changed_processes([{"process_id": "p", "status": "running"}], {})
    >>> [i.status for i in infos], list(keys)
    (['running'], ['p'])
    >>> changed_processes([{"process_id": "p", "status": "running"}], keys, {"p"})[0]
    []
    """
    terminal = ProcessStatus.TERMINAL
    infos: list[ProcessInfo] = []
    new_keys: dict[str, RecordKey] = {}
    old_key = keys.get
    for item in items:
        get = item.get
        pid = get("process_id")
        if pid.__class__ is not str or not pid:  # the usual case is a non-empty str
            pid = raw_process_id(item)
        if held is not None and pid not in held and pid not in waited:
            continue
        key = record_key(item)
        new_keys[pid] = key
        if old_key(pid) != key or (get("status") in terminal and pid in waited):
            infos.append(ProcessInfo.from_wire(item))
    return infos, new_keys


def list_version(data: Any) -> int | None:
    """The sandbox's change counter in a list answer (the ``list_since`` extension)."""
    version = data.get("version") if isinstance(data, Mapping) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def next_cursor(cursor: int, version: int | None) -> int:
    """The ``since`` cursor after an answer carrying ``version``.

    A counter that went back means the server lost its history (a restart without its
    state): start over from everything rather than wait for changes forever.

    >>> next_cursor(7, 9), next_cursor(7, 3), next_cursor(7, None)
    (9, 0, 7)
    """
    if version is None:
        return cursor
    return version if version >= cursor else 0


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


class OutputCursor:
    """Where reading a process's output by offsets has got to, per stream.

    >>> cursor = OutputCursor()
    >>> cursor.take({"stdout": "hi", "stdout_next_offset": 2, "stdout_size": 2})
    [OutputChunk(stream='stdout', text='hi')]
    >>> cursor.drained({"stdout_size": 2, "stderr_size": 0})
    True
    """

    __slots__ = ("offsets",)

    def __init__(self) -> None:
        self.offsets = {"stdout": 0, "stderr": 0}

    def params(self, *, max_bytes: int | None = None, wait: float | None = None) -> dict[str, str]:
        """The query parameters of the next read."""
        params = {
            "stdout_offset": str(self.offsets["stdout"]),
            "stderr_offset": str(self.offsets["stderr"]),
        }
        if max_bytes:
            params["max_bytes"] = str(max_bytes)
        if wait:
            params["wait"] = f"{wait:g}"
        return params

    def take(self, data: Mapping[str, Any]) -> list[OutputChunk]:
        """The new output of one answer; advances the offsets."""
        chunks: list[OutputChunk] = []
        for stream in STREAMS:
            piece = data.get(stream) or ""
            nxt = data.get(f"{stream}_next_offset")
            if isinstance(nxt, int):
                self.offsets[stream] = max(self.offsets[stream], nxt)
            if piece:
                chunks.append(OutputChunk(stream, str(piece)))
        return chunks

    def drained(self, data: Mapping[str, Any]) -> bool:
        """Whether every byte the answer says exists has been read."""
        for stream in STREAMS:
            size = data.get(f"{stream}_size")
            if isinstance(size, int) and self.offsets[stream] < size:
                return False
        return True


def pushed_chunk(data: Mapping[str, Any], cursor: OutputCursor) -> OutputChunk | None:
    """The output of one pushed message (``{"type": "stdout", "data", "offset"}``), if new.

    A message ending at or before the cursor was seen already (never yielded twice).

    >>> cursor = OutputCursor()
    >>> pushed_chunk({"type": "stdout", "data": "hi", "offset": 2}, cursor)
    OutputChunk(stream='stdout', text='hi')
    >>> pushed_chunk({"type": "stdout", "data": "hi", "offset": 2}, cursor) is None
    True
    """
    stream = data.get("type")
    offset = data.get("offset")
    text = data.get("data")
    if stream not in STREAMS or not isinstance(offset, int) or not isinstance(text, str):
        return None
    if offset <= cursor.offsets[stream]:
        return None
    cursor.offsets[stream] = offset
    return OutputChunk(stream, text) if text else None


def status_only(data: Mapping[str, Any]) -> ProcessInfo:
    """The record in an offsets answer, without output (its output is only a slice)."""
    return ProcessInfo.from_wire({**data, "stdout": None, "stderr": None})


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
