"""Client configuration: small frozen attrs objects and the environment lookup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ConfigurationError, ValidationError

__all__ = [
    "DEFAULT_BASE_URL",
    "Limits",
    "PollPolicy",
    "RetryPolicy",
    "Timeouts",
]

DEFAULT_BASE_URL = "https://api.hopx.dev"


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Deadlines for one HTTP request, in seconds.

    These never limit how long a process runs (that is ``timeout=`` of the call that starts
    it) nor how long ``wait()`` waits (its own ``timeout=``).

    >>> Timeouts(request=30.0)
    Timeouts(connect=10.0, request=30.0)
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    request: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen(kw_only=True)
class Limits:
    """Connection limits of the one pool a client shares among all its sandboxes, and the
    largest API answer the client reads (``max_response_bytes``, 64 MiB by default: past it
    :class:`ResponseTooLargeError`; streamed file downloads are not bounded by it), and the
    most of each output stream a process handle keeps for its result (``max_output_bytes``,
    16 MiB by default: the head is kept, the result flagged ``*_truncated``).

    >>> Limits(max_connections=50).max_connections
    50
    """

    max_connections: int = attrs.field(default=256, validator=_positive)
    #: 0 means no limit per host (the local backend serves every sandbox from one host)
    max_connections_per_host: int = attrs.field(default=0, validator=_non_negative)
    keepalive_expiry: float = attrs.field(default=30.0, validator=_positive)
    max_response_bytes: int = attrs.field(default=64 << 20, validator=_positive)
    #: the most a handle keeps of each stream for its result (its head): past it the result's
    #: ``stdout_truncated``/``stderr_truncated`` are set and the kept text stops growing
    max_output_bytes: int = attrs.field(default=16 << 20, validator=_positive)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Retries of safe requests (GET, DELETE) on 429, 502, 503, 504 and connection errors.

    The delay before attempt ``n`` is ``min(max_delay, initial_delay * 2**n)`` with full
    jitter, or the server's ``Retry-After`` / ``retry_after`` when it gives one.

    >>> RetryPolicy(max_retries=0).max_retries  # never retry
    0
    """

    max_retries: int = attrs.field(default=4, validator=_non_negative)
    initial_delay: float = attrs.field(default=0.2, validator=_positive)
    max_delay: float = attrs.field(default=8.0, validator=_positive)
    statuses: frozenset[int] = attrs.field(
        default=frozenset({429, 502, 503, 504}), converter=frozenset
    )


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How a sandbox's watcher polls while somebody waits on its processes.

    The interval is ``growth`` times the age of the youngest waited-on process, kept between
    ``initial_interval`` and ``max_interval``, and never shorter than the server's rate
    limit allows. Where the server offers long polling, one request is held open for up to
    ``long_poll`` seconds instead.

    >>> PollPolicy(max_interval=5.0).max_interval
    5.0
    """

    initial_interval: float = attrs.field(default=0.05, validator=_positive)
    max_interval: float = attrs.field(default=2.0, validator=_positive)
    growth: float = attrs.field(default=0.1, validator=_positive)
    long_poll: float = attrs.field(default=10.0, validator=_non_negative)


def resolve_api_key(api_key: str | None, env: Mapping[str, str] | None = None) -> str:
    """The key from the argument, else ``HOPX_API_KEY``; a clear error when neither is set."""
    env = os.environ if env is None else env
    if api_key is not None and not isinstance(api_key, str):
        raise ValidationError("api_key", f"expected a string, got {type(api_key).__name__}")
    key = api_key if api_key is not None else env.get("HOPX_API_KEY")
    if key is None or not key.strip():
        raise ConfigurationError(
            "No HopX API key: pass api_key=... to the client or set the HOPX_API_KEY "
            'environment variable (for the local backend, `eval "$(hopx local start)"` sets both '
            "HOPX_BASE_URL and HOPX_API_KEY in the shell)."
        )
    key = key.strip()
    if not all(" " <= char <= "~" for char in key):
        # It goes into an HTTP header: a newline would split it, non-ASCII would not encode.
        argument = "api_key" if api_key is not None else "HOPX_API_KEY"
        raise ValidationError(
            argument, "expected printable ASCII characters only (no control characters)"
        )
    return key


def resolve_base_url(base_url: str | None, env: Mapping[str, str] | None = None) -> str:
    """The URL from the argument, else ``HOPX_BASE_URL``, else the HopX service."""
    env = os.environ if env is None else env
    url = base_url or env.get("HOPX_BASE_URL") or DEFAULT_BASE_URL
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    return url
