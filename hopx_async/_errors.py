"""The exceptions raised by hopx_async (and, with the same classes, by hopx_sync).

Every exception derives from :class:`HopxError`::

    HopxError
    ├── ValidationError            bad argument, refused before any I/O (also a ValueError)
    ├── ConfigurationError         no API key, malformed base URL (also a ValueError)
    ├── APIError                   the server answered with an error (status, code, request_id)
    │   ├── BadRequestError            400
    │   ├── AuthenticationError        401 (TokenExpiredError: 401 INVALID_TOKEN)
    │   ├── PaymentRequiredError       402
    │   ├── PermissionDeniedError      403
    │   ├── NotFoundError              404 (SandboxNotFoundError, ProcessNotFoundError)
    │   │   └── SandboxLostError           the sandbox disappeared while its processes ran
    │   ├── ConflictError              409
    │   ├── ExecutionTimeoutError      408 (synchronous execution ran out of time)
    │   ├── RateLimitError             429 (retry_after)
    │   ├── RedirectError              3xx: redirects are not followed (location)
    │   └── ServerError                5xx (ServiceUnavailableError: 503)
    ├── NetworkError               the request did not complete (connection refused, reset, ...)
    │   └── ResponseTooLargeError      an answer past Limits.max_response_bytes
    ├── HopxTimeoutError           also a built-in TimeoutError
    │   ├── RequestTimeoutError        one HTTP request exceeded its deadline
    │   └── WaitTimeoutError           wait(timeout=...) expired; the process keeps running
    ├── ProcessFailedError         wait(check=True) on a failed, killed or timed-out process
    ├── OutputUnavailableError     output() on a server whose process records carry no output
    └── ClientClosedError          the client was closed while a call was waiting
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import ProcessResult

__all__ = [
    "HopxError",
    "ValidationError",
    "ConfigurationError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "TokenExpiredError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "NotFoundError",
    "SandboxNotFoundError",
    "SandboxLostError",
    "ProcessNotFoundError",
    "ConflictError",
    "ExecutionTimeoutError",
    "RateLimitError",
    "RedirectError",
    "ServerError",
    "ServiceUnavailableError",
    "NetworkError",
    "ResponseTooLargeError",
    "HopxTimeoutError",
    "RequestTimeoutError",
    "WaitTimeoutError",
    "ProcessFailedError",
    "OutputUnavailableError",
    "ClientClosedError",
]


class HopxError(Exception):
    """The root of every error this SDK raises."""


class ValidationError(HopxError, ValueError):
    """An argument was refused before any request was sent.

    ``argument`` names the offending parameter.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class ConfigurationError(HopxError, ValueError):
    """The client cannot be configured (for example, no API key anywhere)."""


class APIError(HopxError):
    """The server answered with an error status.

    Attributes: ``status`` (HTTP status), ``code`` (the service's error code, such as
    ``RESOURCE_NOT_FOUND``), ``request_id`` (quote it in support requests) and ``body``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.body = body
        parts = [f"HTTP {status}"]
        if code:
            parts.append(code)
        text = f"{message} ({', '.join(parts)}"
        if request_id:
            text += f", request_id={request_id}"
        super().__init__(text + ")")


class BadRequestError(APIError):
    """400: the server refused the request as malformed."""


class AuthenticationError(APIError):
    """401: the API key or the sandbox token was missing or refused."""


class TokenExpiredError(AuthenticationError):
    """401 INVALID_TOKEN: the sandbox token expired (refreshed once automatically)."""


class PaymentRequiredError(APIError):
    """402: the organisation's plan or balance does not allow this."""


class PermissionDeniedError(APIError):
    """403: the credential is valid but may not do this."""


class NotFoundError(APIError):
    """404: the resource does not exist (or no longer does)."""


class SandboxNotFoundError(NotFoundError):
    """404 for a sandbox."""


class SandboxLostError(SandboxNotFoundError):
    """The sandbox disappeared (killed, expired, deleted by another client) while its
    processes were waited on: their waits end with this, not with a network error or an
    endless wait. ``sandbox_id`` names it; ``process_id`` the process waited on, if any."""

    def __init__(
        self, message: str, *, sandbox_id: str, process_id: str | None = None, **kw: Any
    ) -> None:
        kw.setdefault("status", 404)
        kw.setdefault("code", "SANDBOX_LOST")
        super().__init__(message, **kw)
        self.sandbox_id = sandbox_id
        self.process_id = process_id


class ProcessNotFoundError(NotFoundError):
    """404 for a background process (also raised when a kill finds it already ended)."""


class ConflictError(APIError):
    """409: the resource is in a state that does not allow this."""


class ExecutionTimeoutError(APIError, TimeoutError):
    """408: synchronous execution ran past its timeout."""


class RateLimitError(APIError):
    """429: too many requests. ``retry_after`` is the server's advice in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RedirectError(APIError):
    """3xx: the server answered an API request with a redirect, which is not followed (a
    request body, such as a create's ``env_vars``, must never be re-sent to another host).
    ``location`` is the answer's ``Location`` header (``None`` without one)."""

    def __init__(self, message: str, *, location: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.location = location


class ServerError(APIError):
    """5xx: the service failed."""


class ServiceUnavailableError(ServerError):
    """503: the service is overloaded or down for a moment."""


class NetworkError(HopxError):
    """The request could not be completed: connection refused or reset, DNS failure, ..."""


class ResponseTooLargeError(NetworkError):
    """An answer was larger than ``Limits.max_response_bytes``: it was not read further (an
    endless or huge body on the network path must not exhaust the client's memory)."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class HopxTimeoutError(HopxError, TimeoutError):
    """Something took longer than allowed. Also a built-in :class:`TimeoutError`."""


class RequestTimeoutError(HopxTimeoutError):
    """One HTTP request exceeded its deadline (``Timeouts.request``)."""


class WaitTimeoutError(HopxTimeoutError):
    """``wait(timeout=...)`` expired. The process itself keeps running on the server."""

    def __init__(self, message: str, *, process_id: str | None = None) -> None:
        super().__init__(message)
        self.process_id = process_id


_OUTCOMES = {"failed": "failed", "killed": "was killed", "timeout": "timed out"}


class ProcessFailedError(HopxError):
    """``wait(check=True)`` found the process failed, killed or timed out.

    ``result`` is the full :class:`ProcessResult`, output included.
    """

    def __init__(self, result: ProcessResult) -> None:
        self.result = result
        detail = f"exit code {result.exit_code}" if result.exit_code is not None else "no exit code"
        tail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
        outcome = _OUTCOMES.get(str(result.status), f"ended with status {result.status}")
        message = f"process {result.process_id} {outcome} ({detail})"
        if tail:
            message += f": {tail[0][:200]}"
        super().__init__(message)


class OutputUnavailableError(HopxError):
    """``process.output()`` on a server whose process records carry no ``stdout``/``stderr``
    (the OpenAPI shape): the output cannot be followed, and yielding nothing would pass it
    off as empty. ``wait()`` still gives the status and exit code (its result then has
    ``output_available=False``).
    """

    def __init__(self, message: str, *, process_id: str | None = None) -> None:
        super().__init__(message)
        self.process_id = process_id


class ClientClosedError(HopxError):
    """The client was closed (``aclose()``) while this call was still waiting.

    The processes themselves keep running on the server.
    """


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: ExecutionTimeoutError,
    409: ConflictError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}

_BY_CODE: dict[str, type[APIError]] = {
    "INVALID_TOKEN": TokenExpiredError,
    "PROCESS_NOT_FOUND": ProcessNotFoundError,
    "RATE_LIMIT_EXCEEDED": RateLimitError,
    "RESOURCE_LIMIT_ERROR": RateLimitError,
    "EXECUTION_TIMEOUT": ExecutionTimeoutError,
}


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_error_body(body: Any) -> tuple[str | None, str | None, str | None, float | None]:
    """Read (message, code, request_id, retry_after) from a flat or nested error body.

    Flat (documented): ``{"error": "msg", "code": "X", "request_id": "r", "retry_after": 3}``.
    Nested (official SDK): ``{"error": {"message", "code", "request_id",
    "details": {"retry_after_seconds": 3}}}``. Anything else yields Nones.
    """
    if not isinstance(body, Mapping):
        return None, None, None, None
    err = body.get("error")
    src: Mapping[str, Any] = body
    message: Any = None
    if isinstance(err, Mapping):
        src = err
        message = err.get("message")
    elif isinstance(err, str):
        message = err
    if message is None:
        message = body.get("message") or body.get("detail")
    code = src.get("code", body.get("code"))
    request_id = src.get("request_id", body.get("request_id"))
    details = src.get("details")
    retry = src.get("retry_after", body.get("retry_after"))
    if retry is None and isinstance(details, Mapping):
        retry = details.get("retry_after_seconds", details.get("retry_after"))
    return (
        str(message) if message is not None else None,
        str(code) if code is not None else None,
        str(request_id) if request_id is not None else None,
        _as_float(retry),
    )


def error_from_response(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
    resource: str | None = None,
) -> APIError:
    """Build the right :class:`APIError` subclass for an error answer.

    ``resource`` ("sandbox" or "process") refines a plain 404.
    """
    message, code, body_request_id, body_retry = parse_error_body(body)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    if cls is NotFoundError and resource == "sandbox":
        cls = SandboxNotFoundError
    elif cls is NotFoundError and resource == "process":
        cls = ProcessNotFoundError
    if not message:
        message = body.strip()[:500] if isinstance(body, str) and body.strip() else f"HTTP {status}"
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": body_request_id or request_id,
        "body": body,
    }
    if issubclass(cls, RateLimitError):
        return cls(message, retry_after=body_retry if body_retry is not None else retry_after, **kw)
    return cls(message, **kw)
