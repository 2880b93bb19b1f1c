"""Process lists, with no I/O: the raw records of a list answer, their models, and the cheap
per-record keys that let a full list parse only the records that changed.

These run once per record of every list a watcher polls: keep them free of extra calls.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from ._models import ProcessInfo, ProcessStatus

__all__ = [
    "RecordKey",
    "changed_processes",
    "list_version",
    "next_cursor",
    "process_list",
    "raw_process_id",
    "raw_process_list",
    "record_key",
]


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
