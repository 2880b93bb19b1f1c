"""The one exception type the local backend raises for a documented error answer.

Every error the server sends is the flat body of ``docs/wire.md``, section 4::

    {"error": "message", "code": "CODE", "request_id": "req_..."}

plus, for some codes, a few extra fields (``retry_after`` for 429, the partial output
for a synchronous execution that timed out). The front middleware (``http/app``) turns an
``ApiError`` into that body; nothing else ever reaches the client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "PlainAnswer", "bad_request", "not_found", "process_not_found"]


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra: dict[str, Any] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.code:  # an empty code: a body without one (a strict dialect's token error)
            body["code"] = self.code
        body.update(self.extra)
        body["request_id"] = request_id
        return body


class PlainAnswer(Exception):
    """A plain-text answer with no JSON body (a strict dialect's gateway or route miss)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def bad_request(message: str) -> ApiError:
    return ApiError(400, "INVALID_REQUEST", message)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"{what} {ident!r} not found")


def process_not_found(process_id: str, *, ended: bool = False) -> ApiError:
    if ended:
        message = f"process {process_id!r} is not running (it already ended)"
    else:
        message = f"process {process_id!r} not found"
    return ApiError(404, "PROCESS_NOT_FOUND", message)
