"""Process output, with no I/O: reading by offsets (:class:`OutputCursor`), pushed messages,
and the status-only record of an offsets answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ._models import ProcessInfo
from ._results import OutputChunk

__all__ = ["STREAMS", "OutputCursor", "pushed_chunk", "status_only"]

STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")


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
