"""What an error means for a user of the command line: the SDK's message, with the CLI's
own way out (``--api-key``, ``hopx local status``, ``hopx sandbox resume``)."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from hopx_async import APIError, AuthenticationError, ConflictError, HopxError, NetworkError

from ._output import describe

#: the service's base URL when none is given
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PAUSED = re.compile(r"sandbox (?P<id>\S+) is paused", re.IGNORECASE)


def _suffix(exc: APIError) -> str:
    parts = [f"HTTP {exc.status}"]
    if exc.code:
        parts.append(exc.code)
    if exc.request_id:
        parts.append(f"request_id={exc.request_id}")
    return f" ({', '.join(parts)})"


def cli_message(exc: HopxError, base_url: str | None) -> str:
    """The one line ``hopx`` prints for ``exc``, with a hint that names a command or flag.

    >>> from hopx_async import AuthenticationError
    >>> cli_message(AuthenticationError("invalid API key", status=401), None)
    'invalid API key (HTTP 401): check --api-key or HOPX_API_KEY'
    """
    line = describe(exc)
    if isinstance(exc, AuthenticationError):
        return f"{line}: check --api-key or HOPX_API_KEY"
    if isinstance(exc, ConflictError):
        found = _PAUSED.search(exc.message)
        if found is not None:
            return paused(found["id"].rstrip(";,.:")) + _suffix(exc)
        return line
    if isinstance(exc, NetworkError) and "cannot connect" in line and _is_loopback(base_url):
        return (
            f"{line}; is the local backend running? "
            "`hopx local status --state-dir DIR` says (DIR as given to `hopx local start`)"
        )
    return line


def paused(sandbox_id: str) -> str:
    """What ``hopx`` says of a paused sandbox that a command needs running."""
    return f"sandbox {sandbox_id} is paused: resume it with `hopx sandbox resume {sandbox_id}`"


def _is_loopback(base_url: str | None) -> bool:
    url = base_url or os.environ.get("HOPX_BASE_URL") or ""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host in _LOOPBACK
