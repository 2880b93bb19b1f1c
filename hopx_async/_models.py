"""Typed results, parsed tolerantly from every wire variant the service and its SDK use.

Unknown fields are ignored, unknown statuses are kept as their raw string, and both
field-name families are read (``started_at``/``start_time``, ``completed_at``/``end_time``,
``execution_time``/``duration``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, cast

import attrs

__all__ = [
    "ProcessStatus",
    "SandboxInfo",
    "Resources",
    "ProcessInfo",
    "ProcessResult",
    "ExecutionResult",
    "CommandResult",
    "OutputChunk",
    "StreamEvent",
    "Template",
    "FileInfo",
]


class ProcessStatus:
    """The status strings of a background process. Unknown ones are passed through as-is.

    >>> ProcessStatus.is_terminal("completed")
    True
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    TIMEOUT = "timeout"

    #: statuses after which nothing changes any more
    TERMINAL = frozenset({COMPLETED, FAILED, KILLED, TIMEOUT})
    #: terminal statuses that are not a success
    UNSUCCESSFUL = frozenset({FAILED, KILLED, TIMEOUT})

    @staticmethod
    def is_terminal(status: str) -> bool:
        """Whether ``status`` is final (completed, failed, killed or timeout)."""
        return status in ProcessStatus.TERMINAL


class _DictAccess:
    """Read-only mapping access for code written against the documented dict answers.

    ``obj["status"]`` returns the attribute; ``obj.get("name", "unnamed")`` returns the
    default when the field is missing *or null*, as the documented examples expect.
    """

    __slots__ = ()
    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {}

    def _attr_for(self, key: str) -> str | None:
        name = self._KEY_ALIASES.get(key, key)
        if name.startswith("_") or not hasattr(self, name):
            return None
        return name

    def __getitem__(self, key: str) -> Any:
        name = self._attr_for(key)
        if name is None:
            raise KeyError(key)
        return getattr(self, name)

    def get(self, key: str, default: Any = None) -> Any:
        """The field named ``key``, or ``default`` when it is missing or null."""
        name = self._attr_for(key)
        if name is None:
            return default
        value = getattr(self, name)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._attr_for(key) is not None

    def keys(self) -> list[str]:
        """The field names, as a dict answer would have them."""
        fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(self)))
        return [f.name for f in fields if not f.name.startswith("_")]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def to_dict(self, *, json_ready: bool = False) -> dict[str, Any]:
        """A plain dict of the fields.

        Datetimes stay datetimes; with ``json_ready=True`` they become ISO-8601 strings and
        nested records dicts, so that ``json.dumps(info.to_dict(json_ready=True))`` works.

        >>> ProcessInfo.from_wire({"process_id": "proc_1", "status": "running",
        ...     "started_at": 0}).to_dict(json_ready=True)["started_at"]
        '1970-01-01T00:00:00+00:00'
        """
        data = {k: getattr(self, k) for k in self.keys()}
        return {k: _json_ready(v) for k, v in data.items()} if json_ready else data


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if attrs.has(type(value)):
        return {k: _json_ready(v) for k, v in attrs.asdict(value, recurse=False).items()}
    return value


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 (``Z`` or offset), or unix seconds, to an aware datetime; else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _str(value: Any) -> str | None:
    if value is None or value.__class__ is str:  # the usual cases, without a call
        return value
    return str(value)


def _text(value: Any) -> str:
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if value.__class__ is float:
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


@attrs.frozen(kw_only=True)
class Resources:
    """A sandbox's size."""

    vcpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None

    @classmethod
    def from_wire(cls, data: Any) -> Resources | None:
        if not isinstance(data, Mapping):
            return None
        return cls(
            vcpu=_float(data.get("vcpu")),
            memory_mb=_int(data.get("memory_mb")),
            disk_mb=_int(data.get("disk_mb")),
        )


@attrs.frozen(kw_only=True)
class SandboxInfo(_DictAccess):
    """What the control plane says about a sandbox. The access token is never kept here."""

    id: str
    status: str
    template_id: str | None = None
    template_name: str | None = None
    region: str | None = None
    public_host: str | None = None
    direct_url: str | None = None
    organization_id: str | None = None
    resources: Resources | None = None
    internet_access: bool | None = None
    timeout_seconds: int | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {"sandbox_id": "id"}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SandboxInfo:
        """Parse a sandbox object (``id`` or ``sandbox_id``)."""
        internet = data.get("internet_access")
        return cls(
            id=str(_first(data, "id", "sandbox_id") or ""),
            status=str(data.get("status") or "unknown"),
            template_id=_str(data.get("template_id")),
            template_name=_str(_first(data, "template_name", "template")),
            region=_str(data.get("region")),
            public_host=_str(data.get("public_host")),
            direct_url=_str(data.get("direct_url")),
            organization_id=_str(data.get("organization_id")),
            resources=Resources.from_wire(data.get("resources")),
            internet_access=internet if isinstance(internet, bool) else None,
            timeout_seconds=_int(data.get("timeout_seconds")),
            expires_at=parse_time(data.get("expires_at")),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
        )


@attrs.frozen(kw_only=True)
class Template(_DictAccess):
    """A sandbox template."""

    id: str
    name: str
    display_name: str | None = None
    language: str | None = None
    is_active: bool | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Template:
        active = data.get("is_active")
        return cls(
            id=str(data.get("id") or data.get("name") or ""),
            name=str(data.get("name") or data.get("id") or ""),
            display_name=_str(data.get("display_name")),
            language=_str(data.get("language")),
            is_active=active if isinstance(active, bool) else None,
        )


@attrs.frozen(kw_only=True)
class ProcessInfo(_DictAccess):
    """One background process as the sandbox reports it.

    >>> info = ProcessInfo.from_wire({"process_id": "proc_1", "status": "running"})
    >>> info["status"], info.get("stdout", "")
    ('running', '')
    """

    process_id: str
    status: str
    execution_id: str | None = None
    name: str | None = None
    language: str | None = None
    command: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    execution_time: float | None = None
    pid: int | None = None
    timeout: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    #: the sandbox's change counter at this record's last change (local backend extension)
    version: int | None = attrs.field(default=None, repr=False)

    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {
        "id": "process_id",
        "start_time": "started_at",
        "end_time": "completed_at",
        "duration": "execution_time",
    }

    @property
    def is_done(self) -> bool:
        """Whether the process has reached a terminal status."""
        return self.status in ProcessStatus.TERMINAL

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ProcessInfo:
        """Parse a process object, documented or generated-model field names."""
        get = data.get  # called for every changed record of a list: one lookup each
        status = get("status")
        return cls(
            process_id=str(_first(data, "process_id", "id") or ""),
            status=status if status.__class__ is str and status else str(status or "unknown"),
            execution_id=_str(get("execution_id")),
            name=_str(get("name")),
            language=_str(get("language")),
            command=_str(get("command")),
            started_at=parse_time(_first(data, "started_at", "start_time")),
            completed_at=parse_time(_first(data, "completed_at", "end_time")),
            stdout=_text(get("stdout")),
            stderr=_text(get("stderr")),
            exit_code=_int(get("exit_code")),
            execution_time=_float(_first(data, "execution_time", "duration")),
            pid=_int(get("pid")),
            timeout=_int(get("timeout")),
            stdout_truncated=bool(get("stdout_truncated")),
            stderr_truncated=bool(get("stderr_truncated")),
            version=_int(get("version")),
        )


@attrs.frozen(kw_only=True)
class ProcessResult(_DictAccess):
    """How a background process ended, with all of its output."""

    process_id: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    name: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time: float | None = None

    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {"id": "process_id"}

    @property
    def ok(self) -> bool:
        """True when the process completed with exit code 0."""
        return self.status == ProcessStatus.COMPLETED and self.exit_code in (0, None)

    @classmethod
    def from_info(
        cls, info: ProcessInfo, *, stdout: str | None = None, stderr: str | None = None
    ) -> ProcessResult:
        """The result of a finished :class:`ProcessInfo` (optionally with full output)."""
        return cls(
            process_id=info.process_id,
            status=info.status,
            exit_code=info.exit_code,
            stdout=info.stdout if stdout is None else stdout,
            stderr=info.stderr if stderr is None else stderr,
            name=info.name,
            started_at=info.started_at,
            completed_at=info.completed_at,
            execution_time=info.execution_time,
        )


@attrs.frozen(kw_only=True)
class ExecutionResult(_DictAccess):
    """The answer of synchronous execution (``run_code``)."""

    success: bool
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ExecutionResult:
        exit_code = _int(data.get("exit_code"))
        success = data.get("success")
        return cls(
            success=success if isinstance(success, bool) else exit_code == 0,
            stdout=_text(data.get("stdout")),
            stderr=_text(data.get("stderr")),
            exit_code=exit_code,
            execution_time=_float(_first(data, "execution_time", "duration")),
        )


@attrs.frozen(kw_only=True)
class CommandResult(_DictAccess):
    """The answer of a foreground command (``commands.run``)."""

    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float | None = None

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.exit_code == 0

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CommandResult:
        return cls(
            stdout=_text(data.get("stdout")),
            stderr=_text(data.get("stderr")),
            exit_code=_int(data.get("exit_code")),
            execution_time=_float(_first(data, "execution_time", "duration")),
        )


@attrs.frozen
class OutputChunk:
    """A piece of live output from ``process.output()``."""

    stream: Literal["stdout", "stderr"]
    text: str


@attrs.frozen(kw_only=True)
class StreamEvent:
    """One message of a streamed execution (``run_code_stream``, ``commands.stream``).

    ``kind`` is ``"stdout"`` or ``"stderr"`` (``text`` holds the output), ``"result"``
    (``exit_code``, ``execution_time``, ``success``, ``timed_out``) or ``"complete"``, the
    last event (``success``). Kinds the SDK does not know are passed through with ``raw``.

    >>> StreamEvent.from_wire({"type": "stdout", "data": "hi\\n"}).text
    'hi\\n'
    """

    kind: str
    text: str = ""
    exit_code: int | None = None
    execution_time: float | None = None
    success: bool | None = None
    timed_out: bool = False
    timestamp: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def is_output(self) -> bool:
        """Whether this event carries output (``stdout`` or ``stderr``)."""
        return self.kind in ("stdout", "stderr")

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> StreamEvent:
        success = data.get("success")
        return cls(
            kind=str(data.get("type") or "unknown"),
            text=_text(data.get("data")),
            exit_code=_int(data.get("exit_code")),
            execution_time=_float(_first(data, "execution_time", "duration")),
            success=success if isinstance(success, bool) else None,
            timed_out=data.get("timed_out") is True,
            timestamp=_str(data.get("timestamp")),
            raw=dict(data),
        )


@attrs.frozen(kw_only=True)
class FileInfo(_DictAccess):
    """One entry of ``sandbox.files.list()``: a file, a directory or a symbolic link.

    >>> FileInfo.from_wire({"name": "a.txt", "path": "/workspace/a.txt", "size": 3}).is_file
    True
    """

    name: str
    path: str
    size: int = 0
    is_directory: bool = False
    is_symlink: bool = False
    permissions: str | None = None
    modified_time: datetime | None = None

    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {"is_dir": "is_directory", "mode": "permissions"}

    @property
    def is_file(self) -> bool:
        """True for a regular file (neither a directory nor a link)."""
        return not self.is_directory and not self.is_symlink

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> FileInfo:
        is_dir = _first(data, "is_directory", "is_dir")
        return cls(
            name=_text(data.get("name")),
            path=_text(data.get("path")),
            size=_int(data.get("size")) or 0,
            is_directory=is_dir is True,
            is_symlink=data.get("is_symlink") is True,
            permissions=_str(_first(data, "permissions", "mode")),
            modified_time=parse_time(_first(data, "modified_time", "modified")),
        )
