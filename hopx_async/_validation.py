"""Argument checks that run before any I/O. Each names the argument and what is allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ._errors import ValidationError

__all__ = ["LANGUAGES", "MAX_PROCESS_TIMEOUT", "MAX_SECONDS", "MAX_SYNC_TIMEOUT", "ValidationError"]

#: languages the service documents for code execution
LANGUAGES = ("python", "javascript", "bash", "go")
#: the service's documented maximum for synchronous execution
MAX_SYNC_TIMEOUT = 300
#: the documented maximum lifetime of a process (background, asynchronous, commands): 7 days
MAX_PROCESS_TIMEOUT = 7 * 24 * 3600
#: the largest number of seconds any timeout accepts (2**31 - 1, about 68 years): beyond it a
#: deadline is no longer a date the service can store
MAX_SECONDS = 2**31 - 1
#: the largest whole number any count accepts
_MAX_INT = 2**63 - 1
#: whole-number arguments that count seconds, so that they get ``MAX_SECONDS`` as maximum
_SECONDS_ARGUMENTS = frozenset({"seconds", "timeout_seconds"})
#: environment variable names, matched in full (a trailing newline is refused too)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _text(argument: str, value: str, what: str = "expected") -> str:
    """``value`` unless it cannot travel as UTF-8 (it holds a lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            argument, f"{what} valid Unicode text, got a string with a lone surrogate"
        ) from None
    return value


def non_empty_str(argument: str, value: Any) -> str:
    """A non-blank string, e.g. code, command, ids."""
    if not isinstance(value, str):
        raise ValidationError(argument, f"expected a non-empty string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(argument, "expected a non-empty string, got an empty one")
    return _text(argument, value)


def optional_str(argument: str, value: Any) -> str | None:
    if value is None:
        return None
    return non_empty_str(argument, value)


def language(value: Any) -> str:
    """One of the documented languages, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in LANGUAGES:
        raise ValidationError("language", f"expected one of {', '.join(LANGUAGES)}; got {value!r}")
    return value.strip().lower()


def _shown(value: Any) -> str:
    """A short repr: a 400-digit number is not worth printing in full."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def positive_number(argument: str, value: Any, *, maximum: float | None = None) -> float:
    """A finite number > 0, at most ``maximum`` (never more than ``MAX_SECONDS``).

    Booleans, infinities and NaN are refused.
    """
    limit = MAX_SECONDS if maximum is None else min(maximum, MAX_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(argument, f"expected a number of seconds > 0, got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(argument, f"expected a finite number of seconds, got {value!r}")
    if not value > 0:
        raise ValidationError(argument, f"expected a number of seconds > 0, got {_shown(value)}")
    if value > limit:
        shown_limit = int(limit) if float(limit).is_integer() else limit
        raise ValidationError(
            argument, f"expected at most {shown_limit} seconds, got {_shown(value)}"
        )
    return float(value)


def positive_int(argument: str, value: Any, *, maximum: int | None = None) -> int:
    """A whole number > 0, at most ``maximum``.

    Arguments that count seconds (``seconds``, ``timeout_seconds``) are capped at
    ``MAX_SECONDS`` unless a smaller maximum is given.
    """
    if maximum is None:
        maximum = MAX_SECONDS if argument in _SECONDS_ARGUMENTS else _MAX_INT
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(argument, f"expected a whole number > 0, got {_shown(value)}")
    if value > maximum:
        raise ValidationError(argument, f"expected at most {maximum}, got {_shown(value)}")
    return value


def optional_timeout(argument: str, value: Any) -> float | None:
    """None (wait forever) or a finite number > 0."""
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
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValidationError(
                argument,
                "names must be non-empty, of letters, digits and '_', not starting with a digit, "
                f"got {_shown(key)}",
            )
        if not isinstance(val, str):
            raise ValidationError(
                argument,
                f"value of {key!r} must be a str, got {type(val).__name__} "
                "(convert numbers and booleans with str())",
            )
        if "\0" in val:
            raise ValidationError(argument, f"value of {key!r} must not contain NUL characters")
        out[key] = _text(argument, val, f"value of {key!r} must be")
    return out
