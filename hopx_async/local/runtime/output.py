"""Reading process output files: capped tails for lists, byte ranges for offsets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "LIST_ANSWER_BUDGET",
    "cap_list_output",
    "fair_share",
    "file_size",
    "read_range",
    "read_tail",
    "utf8_safe_end",
]


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _sequence_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    if lead >> 3 == 0b11110:
        return 4
    return 1  # a stray continuation byte or an invalid lead: never completes


def utf8_safe_end(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8 sequence."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): the last sequence starts here
            if back < _sequence_length(byte):
                return end - back
            return end
    return end


def _skip_continuations(data: bytes) -> bytes:
    """Drop the continuation bytes a cut at an arbitrary offset left at the start."""
    start = 0
    while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:]


def read_tail(path: Path, limit: int) -> tuple[str, bool, int]:
    """The last ``limit`` bytes of ``path`` as text: ``(text, truncated, size)``."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            truncated = size > limit
            if truncated:
                f.seek(size - limit)
            data = f.read(limit)
    except FileNotFoundError:
        return "", False, 0
    if truncated:
        data = _skip_continuations(data)
    return data.decode("utf-8", "replace"), truncated, size


def read_range(path: Path, offset: int, max_bytes: int, *, final: bool) -> tuple[str, int, int]:
    """Bytes ``offset..offset+max_bytes`` of ``path``: ``(text, next_offset, size)``.

    The end is trimmed back so a UTF-8 sequence is never split, except when the process
    has ended (``final``) and the cut is at the end of the file: those bytes will never
    be completed, so they are returned (decoded with replacement characters).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset >= size:
                return "", offset, size
            f.seek(offset)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return "", offset, 0
    at_end = offset + len(data) >= size
    if not (final and at_end):
        data = data[: utf8_safe_end(data)]
    return data.decode("utf-8", "replace"), offset + len(data), size


#: All the output in one process-list answer, in characters (stdout and stderr of every
#: process together): past it, each stream keeps a fair share of its tail.
LIST_ANSWER_BUDGET = 8 * 1024 * 1024


def fair_share(sizes: list[int], budget: int) -> int:
    """The largest ``cap`` with ``sum(min(size, cap)) <= budget``.

    Small outputs are kept whole; what they leave is shared equally among the large ones.

    >>> fair_share([10, 10, 100, 1000], 220)
    100
    """
    remaining, left = budget, len(sizes)
    for size in sorted(sizes):
        if size * left > remaining:
            return remaining // left
        remaining -= size
        left -= 1
    return max(sizes, default=0)


def cap_list_output(processes: list[dict[str, Any]], budget: int = LIST_ANSWER_BUDGET) -> None:
    """Cut ``stdout``/``stderr`` of list entries to their tails so that all fit in ``budget``.

    A stream that is cut gets ``stdout_truncated``/``stderr_truncated`` set; its whole output
    stays readable with ``GET /execute/processes/{id}?stdout_offset=0``.
    """
    streams = [
        (data, stream)
        for data in processes
        for stream in ("stdout", "stderr")
        if isinstance(data.get(stream), str)
    ]
    sizes = [len(data[stream]) for data, stream in streams]
    if sum(sizes) <= budget:
        return
    cap = fair_share(sizes, budget)
    for data, stream in streams:
        text = data[stream]
        if len(text) > cap:
            data[stream] = text[len(text) - cap :] if cap else ""
            data[f"{stream}_truncated"] = True
