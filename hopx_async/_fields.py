"""Tolerant field readers for the models: each takes what the wire holds (or nothing) and
gives the typed value or None, never an exception; and the dict-style access the models share.

No I/O. The readers are called once per field of every record parsed, so the usual cases
(the value already has the wanted type) cost no call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, cast

import attrs

__all__ = [
    "DictAccess",
    "as_float",
    "as_int",
    "as_str",
    "as_text",
    "first_of",
    "parse_iso_time",
    "parse_time",
]


class DictAccess:
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

        >>> from hopx_async import ProcessInfo
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


#: ISO-8601 date and time: separator ``T``, ``t`` or a space; seconds optional; any number of
#: fractional digits (Go writes up to 9); ``Z`` or an offset (``+hh:mm``, ``+hhmm``, ``+hh``)
_ISO_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?"
)


def parse_iso_time(text: str) -> datetime | None:
    """An ISO-8601 timestamp to an aware datetime (UTC when it has no offset); else None.

    Fractional seconds of any length are read (rounded down to microseconds), without
    relying on :meth:`datetime.fromisoformat`, whose leniency depends on the Python version.

    >>> parse_iso_time("2026-01-02T03:04:05.123456789Z").isoformat()
    '2026-01-02T03:04:05.123456+00:00'
    """
    match = _ISO_TIME.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, oh, om = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if sign is not None:
        offset = timedelta(hours=int(oh), minutes=int(om or 0))
        if offset >= timedelta(hours=24):
            return None
        tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 (``Z`` or offset, any fractional digits), or unix seconds, to an aware
    datetime; else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        return parse_iso_time(value)
    return None


def as_str(value: Any) -> str | None:
    if value is None or value.__class__ is str:  # the usual cases, without a call
        return value
    return str(value)


def as_text(value: Any) -> str:
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_int(value: Any) -> int | None:
    if value.__class__ is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    if value.__class__ is float:
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def first_of(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None
