"""Results of executions, commands, streams and file listings, parsed tolerantly.

Unknown fields are ignored; both field-name families are read (``execution_time``/
``duration``, ``is_directory``/``is_dir``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal

import attrs

from ._fields import DictAccess, as_float, as_int, as_str, as_text, first_of, parse_time

__all__ = ["CommandResult", "ExecutionResult", "FileInfo", "OutputChunk", "StreamEvent"]


@attrs.frozen(kw_only=True)
class ExecutionResult(DictAccess):
    """The answer of synchronous execution (``run_code``)."""

    success: bool
    stdout: str
    stderr: str
    exit_code: int | None
    execution_time: float | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ExecutionResult:
        exit_code = as_int(data.get("exit_code"))
        success = data.get("success")
        return cls(
            success=success if isinstance(success, bool) else exit_code == 0,
            stdout=as_text(data.get("stdout")),
            stderr=as_text(data.get("stderr")),
            exit_code=exit_code,
            execution_time=as_float(first_of(data, "execution_time", "duration")),
        )


@attrs.frozen(kw_only=True)
class CommandResult(DictAccess):
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
            stdout=as_text(data.get("stdout")),
            stderr=as_text(data.get("stderr")),
            exit_code=as_int(data.get("exit_code")),
            execution_time=as_float(first_of(data, "execution_time", "duration")),
        )


@attrs.frozen
class OutputChunk:
    """A piece of live output from ``process.output()``.

    ``gap`` is True when output before this piece was lost: the server keeps only a tail of
    each stream and it slid past what had been yielded (``text`` is then that whole tail).
    """

    stream: Literal["stdout", "stderr"]
    text: str
    gap: bool = attrs.field(default=False, repr=False)


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
            text=as_text(data.get("data")),
            exit_code=as_int(data.get("exit_code")),
            execution_time=as_float(first_of(data, "execution_time", "duration")),
            success=success if isinstance(success, bool) else None,
            timed_out=data.get("timed_out") is True,
            timestamp=as_str(data.get("timestamp")),
            raw=dict(data),
        )


@attrs.frozen(kw_only=True)
class FileInfo(DictAccess):
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
        is_dir = first_of(data, "is_directory", "is_dir")
        return cls(
            name=as_text(data.get("name")),
            path=as_text(data.get("path")),
            size=as_int(data.get("size")) or 0,
            is_directory=is_dir is True,
            is_symlink=data.get("is_symlink") is True,
            permissions=as_str(first_of(data, "permissions", "mode")),
            modified_time=parse_time(first_of(data, "modified_time", "modified")),
        )
