"""Argument checks that run before any I/O. Each names the argument and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import ValidationError

__all__ = ["LANGUAGES", "MAX_SYNC_TIMEOUT", "ValidationError"]

#: languages the service documents for code execution
LANGUAGES = ("python", "javascript", "bash", "go")
#: the service's documented maximum for synchronous execution
MAX_SYNC_TIMEOUT = 300


def non_empty_str(argument: str, value: Any) -> str:
    """A non-blank string, e.g. code, command, ids."""
    if not isinstance(value, str):
        raise ValidationError(argument, f"expected a non-empty string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(argument, "expected a non-empty string, got an empty one")
    return value


def optional_str(argument: str, value: Any) -> str | None:
    if value is None:
        return None
    return non_empty_str(argument, value)


def language(value: Any) -> str:
    """One of the documented languages, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in LANGUAGES:
        raise ValidationError("language", f"expected one of {', '.join(LANGUAGES)}; got {value!r}")
    return value.strip().lower()


def positive_number(argument: str, value: Any, *, maximum: float | None = None) -> float:
    """A number > 0 (and <= maximum when given). Booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(argument, f"expected a number of seconds > 0, got {value!r}")
    if not value > 0:
        raise ValidationError(argument, f"expected a number of seconds > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValidationError(argument, f"expected at most {maximum:g} seconds, got {value!r}")
    return float(value)


def positive_int(argument: str, value: Any, *, maximum: int | None = None) -> int:
    """A whole number > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(argument, f"expected a whole number > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValidationError(argument, f"expected at most {maximum}, got {value!r}")
    return value


def optional_timeout(argument: str, value: Any) -> float | None:
    """None (wait forever) or a number > 0."""
    return None if value is None else positive_number(argument, value)


def env_vars(argument: str, value: Any) -> dict[str, str] | None:
    """None or a mapping of non-empty string names to string values."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            argument, f"expected a dict of str to str, got {type(value).__name__}"
        )
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValidationError(
                argument, f"names must be non-empty strings without '=' or NUL, got {key!r}"
            )
        if not isinstance(val, str):
            raise ValidationError(
                argument,
                f"value of {key!r} must be a str, got {type(val).__name__} "
                "(convert numbers and booleans with str())",
            )
        out[key] = val
    return out
