"""The records the backend keeps: sandboxes and background processes.

They are plain mutable attrs classes, serialised to JSON for the store. Everything the
wire shows is derived from them by ``service/render``.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any, Literal

import attrs

__all__ = [
    "TERMINAL_STATUSES",
    "ProcessRecord",
    "SandboxRecord",
    "iso",
    "new_id",
]

TERMINAL_STATUSES = frozenset({"completed", "failed", "killed", "timeout"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def iso(ts: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds, ending in ``Z`` (``None`` stays ``None``).

    A time that is no date (a value stored before ranges were checked) is ``None`` too.
    """
    if ts is None:
        return None
    try:
        moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.define(eq=False)
class SandboxRecord:
    id: str
    seq: int
    template_name: str
    template_id: str
    region: str
    internet_access: bool
    created_at: float
    updated_at: float
    status: str = "running"
    timeout_seconds: int | None = None
    expires_at: float | None = None
    env_vars: dict[str, str] = attrs.Factory(dict)
    # Change counter for the process list (bumped on every process status transition).
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxRecord:
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@attrs.define(eq=False)
class ProcessRecord:
    process_id: str
    execution_id: str
    sandbox_id: str
    seq: int
    kind: Literal["code", "command"]
    language: str
    timeout: float
    created_at: float
    name: str | None = None
    command: str | None = None
    status: str = "queued"
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    # /proc/<pid>/stat start time of the group leader, to recognise it after a restart.
    pid_start: str | None = None
    version: int = 0
    idempotency_key: str | None = None
    # Why the server ended it or could not follow it (shown as "error" when set).
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
