"""Process output, with no I/O: reading by offsets (:class:`OutputCursor`), following
sliding tails of full records (:class:`TailFollower`), pushed messages, the bounded output
a handle keeps (:class:`KeptOutput`), and the status-only record of an offsets answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._models import ProcessInfo, ProcessResult
from ._results import OutputChunk

__all__ = [
    "STREAMS",
    "KeptOutput",
    "OutputCursor",
    "TailFollower",
    "bounded_result",
    "pushed_chunk",
    "status_only",
]

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


class KeptOutput:
    """The output a handle keeps for its result, per stream: the head, at most ``limit``
    UTF-8 bytes (``Limits.max_output_bytes``); past it the stream stops growing and is
    flagged truncated (a sandbox may write an endless or huge sparse stdout for free).

    >>> kept = KeptOutput(limit=4)
    >>> kept.add(OutputChunk("stdout", "abc"))
    >>> kept.add(OutputChunk("stdout", "def"))
    >>> kept.text("stdout"), kept.truncated("stdout"), kept.truncated("stderr")
    ('abcd', True, False)
    """

    __slots__ = ("_cut", "_parts", "_size", "limit")

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._size = {"stdout": 0, "stderr": 0}
        self._cut = {"stdout": False, "stderr": False}

    def add(self, chunk: OutputChunk) -> None:
        stream = chunk.stream
        if self._cut[stream]:
            return
        room = self.limit - self._size[stream]
        size = len(chunk.text.encode())
        if size <= room:
            self._parts[stream].append(chunk.text)
            self._size[stream] += size
            return
        head = chunk.text.encode()[:room].decode(errors="ignore")
        self._parts[stream].append(head)
        self._size[stream] = self.limit
        self._cut[stream] = True

    def text(self, stream: str) -> str:
        return "".join(self._parts[stream])

    def truncated(self, stream: str) -> bool:
        return self._cut[stream]

    def complete(self, cursor: OutputCursor, data: Mapping[str, Any]) -> bool:
        """Whether reading on by offsets would add nothing: every stream is either read to
        the size the answer gives or already cut (no need to read a huge rest)."""
        for stream in STREAMS:
            size = data.get(f"{stream}_size")
            if self._cut[stream]:
                continue
            if isinstance(size, int) and cursor.offsets[stream] < size:
                return False
        return True


def bounded_result(result: ProcessResult, limit: int) -> ProcessResult:
    """``result`` with each stream cut to its head of at most ``limit`` UTF-8 bytes (and
    flagged truncated where cut).

    >>> r = ProcessResult(process_id="p", status="completed", exit_code=0, stdout="abcdef",
    ...                   stderr="")
    >>> cut = bounded_result(r, 4)
    >>> cut.stdout, cut.stdout_truncated, cut.stderr_truncated
    ('abcd', True, False)
    """
    changes: dict[str, Any] = {}
    for stream in STREAMS:
        text: str = getattr(result, stream)
        if len(text) * 4 <= limit:  # a character is at most 4 bytes: surely within
            continue
        kept = KeptOutput(limit=limit)
        kept.add(OutputChunk(stream, text))
        if kept.truncated(stream):
            changes[stream] = kept.text(stream)
            changes[f"{stream}_truncated"] = True
    return attrs.evolve(result, **changes) if changes else result


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


#: candidate positions tried before the tail is taken as having slid past (repetitive output)
_TRIES = 256


class TailFollower:
    r"""New output from successive full records whose text may be a sliding tail (the
    server keeps the last part of a stream and flags it ``*_truncated``).

    While a stream is whole, the new text is what is past the length already seen; once it
    is cut, the new text is what follows the end of the last text seen in the new tail,
    and a chunk with ``gap=True`` (the whole tail) when the tail slid past it.

    >>> follow = TailFollower()
    >>> whole = ProcessInfo(process_id="p", status="running", stdout="z\n" + "a\n" * 40)
    >>> len(follow.take(whole)[0].text)
    82
    >>> slid = "a\n" * 40 + "b\n"  # the tail slid by 2 characters, 2 new ones
    >>> cut = ProcessInfo(process_id="p", status="running", stdout=slid, stdout_truncated=True)
    >>> [(c.text, c.gap) for c in follow.take(cut)]
    [('b\n', False)]
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = {"stdout": "", "stderr": ""}

    def take(self, info: ProcessInfo) -> list[OutputChunk]:
        chunks = []
        for stream, text, cut in (
            ("stdout", info.stdout, info.stdout_truncated),
            ("stderr", info.stderr, info.stderr_truncated),
        ):
            last = self.last[stream]
            if not cut:
                if len(text) > len(last):
                    chunks.append(OutputChunk(stream, text[len(last) :]))  # type: ignore[arg-type]
                    self.last[stream] = text
                continue
            if text == last:
                continue
            start = _overlap(last, text)
            if start is None:
                chunks.append(OutputChunk(stream, text, gap=True))  # type: ignore[arg-type]
            elif start < len(text):
                chunks.append(OutputChunk(stream, text[start:]))  # type: ignore[arg-type]
            self.last[stream] = text
        return chunks


def _overlap(last: str, text: str) -> int | None:
    r"""Where the text after ``last`` starts in ``text`` (a tail that slid on from ``last``):
    the largest ``p`` with ``text[:p] == last[-p:]`` (a smaller one can be a repeated line,
    which would yield lines twice) that spans a line break; None if none (within a few tries).

    The new tail's head up to its second line break (its cut first line and one whole line)
    is looked up in ``last``, leftmost first: unlike the end of ``last``, which can be in the
    middle of a long run of one character, that head is rare. An overlap within one line is
    ambiguous (a cut first line can match the end of any line), so a text with no line break
    has none.

    >>> _overlap("ab\n01\n02\nxyz", "01\n02\nxyz\n03")
    9
    >>> _overlap("aaaa", "aaaab") is None
    True
    """
    first = text.find("\n")
    if not last or first < 0:
        return None
    second = text.find("\n", first + 1)
    anchor = text[: second + 1] if second >= 0 else text
    at = last.find(anchor)
    for _ in range(_TRIES):
        if at < 0:
            return None
        size = len(last) - at
        if size <= len(text) and text.startswith(last[at:]):
            return size
        at = last.find(anchor, at + 1)
    return None
