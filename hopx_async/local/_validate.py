"""Reading request bodies and query strings: every bad value is a 400 naming the field."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ._errors import bad_request

__all__ = [
    "opt_bool",
    "opt_env",
    "opt_int",
    "opt_number",
    "opt_str",
    "opt_str_list",
    "parse_body",
    "query_float",
    "query_int",
    "req_str",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    return data


def opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string")
    return value


def req_str(body: Mapping[str, Any], key: str) -> str:
    value = opt_str(body, key)
    if value is None:
        raise bad_request(f"'{key}' is required")
    if not value.strip():
        raise bad_request(f"'{key}' must not be empty")
    return value


def opt_bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' must be true or false")
    return value


def opt_number(
    body: Mapping[str, Any], key: str, default: float, *, maximum: float | None = None
) -> float:
    """A positive number (int or float, not bool), at most ``maximum``."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"'{key}' must be a number of seconds")
    if value <= 0:
        raise bad_request(f"'{key}' must be greater than 0")
    if maximum is not None and value > maximum:
        raise bad_request(f"'{key}' must be at most {maximum:g}")
    return float(value)


def opt_int(body: Mapping[str, Any], key: str, *, minimum: int = 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{key}' must be an integer")
    if value < minimum:
        raise bad_request(f"'{key}' must be at least {minimum}")
    return value


def opt_env(body: Mapping[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{key}' must be an object of string names to string values")
    env: dict[str, str] = {}
    for name, item in value.items():
        if not _ENV_NAME.match(name):
            raise bad_request(f"'{key}' has an invalid variable name {name!r}")
        if not isinstance(item, str) or "\x00" in item:
            raise bad_request(f"'{key}.{name}' must be a string")
        env[name] = item
    return env


def opt_str_list(body: Mapping[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"'{key}' must be a list of strings")
    return list(value)


def query_int(query: Mapping[str, str], key: str, *, minimum: int, maximum: int) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter '{key}' must be an integer") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"query parameter '{key}' must be between {minimum} and {maximum}")
    return value


def query_float(query: Mapping[str, str], key: str, *, maximum: float) -> float | None:
    raw = query.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"query parameter '{key}' must be a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise bad_request(f"query parameter '{key}' must be greater than 0 and at most {maximum:g}")
    return value
