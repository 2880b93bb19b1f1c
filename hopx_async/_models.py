"""Sandbox and background-process models, parsed tolerantly from every wire variant the
service and its SDK use (execution and command results are in :mod:`._results`).

Unknown fields are ignored, unknown statuses are kept as their raw string, and both
field-name families are read (``started_at``/``start_time``, ``completed_at``/``end_time``,
``execution_time``/``duration``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import attrs

from ._fields import DictAccess, as_float, as_int, as_str, as_text, first_of, parse_time

__all__ = [
    "ProcessStatus",
    "SandboxInfo",
    "Resources",
    "ProcessInfo",
    "ProcessResult",
    "Template",
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
    #: not a server's status: the sandbox disappeared before the process was seen to end
    #: (a result of ``run_many``)
    LOST = "lost"

    #: statuses after which nothing changes any more
    TERMINAL = frozenset({COMPLETED, FAILED, KILLED, TIMEOUT})
    #: statuses of a process that has not ended
    ACTIVE = frozenset({QUEUED, RUNNING})
    #: terminal statuses that are not a success
    UNSUCCESSFUL = frozenset({FAILED, KILLED, TIMEOUT, LOST})

    @staticmethod
    def is_terminal(status: str) -> bool:
        """Whether ``status`` is final (completed, failed, killed or timeout)."""
        return status in ProcessStatus.TERMINAL


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
            vcpu=as_float(data.get("vcpu")),
            memory_mb=as_int(data.get("memory_mb")),
            disk_mb=as_int(data.get("disk_mb")),
        )


@attrs.frozen(kw_only=True)
class SandboxInfo(DictAccess):
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
            id=str(first_of(data, "id", "sandbox_id") or ""),
            status=str(data.get("status") or "unknown"),
            template_id=as_str(data.get("template_id")),
            template_name=as_str(first_of(data, "template_name", "template")),
            region=as_str(data.get("region")),
            public_host=as_str(data.get("public_host")),
            direct_url=as_str(data.get("direct_url")),
            organization_id=as_str(data.get("organization_id")),
            resources=Resources.from_wire(data.get("resources")),
            internet_access=internet if isinstance(internet, bool) else None,
            timeout_seconds=as_int(data.get("timeout_seconds")),
            expires_at=parse_time(data.get("expires_at")),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
        )


@attrs.frozen(kw_only=True)
class Template(DictAccess):
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
            display_name=as_str(data.get("display_name")),
            language=as_str(data.get("language")),
            is_active=active if isinstance(active, bool) else None,
        )


@attrs.frozen(kw_only=True)
class ProcessInfo(DictAccess):
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
    #: False when the record carried neither ``stdout`` nor ``stderr`` (the OpenAPI shape):
    #: then the empty ``stdout``/``stderr`` say nothing of the output
    output_available: bool = True
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
        """Whether the process has ended: a terminal status, or a status this SDK does not
        know (e.g. ``error``) on a record carrying an end time or an exit code."""
        status = self.status
        if status in ProcessStatus.TERMINAL:
            return True
        if status in ProcessStatus.ACTIVE:
            return False
        return self.completed_at is not None or self.exit_code is not None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ProcessInfo:
        """Parse a process object, documented or generated-model field names."""
        get = data.get  # called for every changed record of a list: one lookup each
        status = get("status")
        stdout, stderr = get("stdout"), get("stderr")
        return cls(
            process_id=str(first_of(data, "process_id", "id") or ""),
            status=status if status.__class__ is str and status else str(status or "unknown"),
            execution_id=as_str(get("execution_id")),
            name=as_str(get("name")),
            language=as_str(get("language")),
            command=as_str(get("command")),
            started_at=parse_time(first_of(data, "started_at", "start_time")),
            completed_at=parse_time(first_of(data, "completed_at", "end_time")),
            stdout=as_text(stdout),
            stderr=as_text(stderr),
            exit_code=as_int(get("exit_code")),
            execution_time=as_float(first_of(data, "execution_time", "duration")),
            output_available=stdout is not None or stderr is not None,
            pid=as_int(get("pid")),
            timeout=as_int(get("timeout")),
            stdout_truncated=bool(get("stdout_truncated")),
            stderr_truncated=bool(get("stderr_truncated")),
            version=as_int(get("version")),
        )


@attrs.frozen(kw_only=True)
class ProcessResult(DictAccess):
    """How a background process ended, with all of its output.

    ``output_available`` is False when the server reported no output at all (the OpenAPI
    process record has no ``stdout``/``stderr``): ``stdout`` and ``stderr`` are then empty
    strings that say nothing of what the process printed (``result.get("stdout", "")``
    still works). ``stdout_truncated``/``stderr_truncated`` are True when the text is only
    the tail the server kept (or the head the client kept, see ``Limits.max_output_bytes``).

    >>> ProcessResult(process_id="p", status="completed", exit_code=0, stdout="", stderr="",
    ...               output_available=False).output_available
    False
    """

    process_id: str
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    name: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time: float | None = None
    output_available: bool = True
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    _KEY_ALIASES: ClassVar[Mapping[str, str]] = {"id": "process_id"}

    @property
    def ok(self) -> bool:
        """True when the process completed with exit code 0."""
        return self.status == ProcessStatus.COMPLETED and self.exit_code in (0, None)

    @classmethod
    def from_info(
        cls,
        info: ProcessInfo,
        *,
        stdout: str | None = None,
        stderr: str | None = None,
        cut: tuple[bool, bool] = (False, False),
    ) -> ProcessResult:
        """The result of a finished :class:`ProcessInfo` (optionally with the output read
        in full: then it is available, and truncated only as ``cut`` says, per stream,
        where the client kept only its head)."""
        full = stdout is not None
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
            output_available=full or info.output_available,
            stdout_truncated=cut[0] if full else info.stdout_truncated,
            stderr_truncated=cut[1] if full else info.stderr_truncated,
        )
