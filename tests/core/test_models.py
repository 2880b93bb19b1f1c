"""Tolerant parsing of every wire variant (docs/wire.md, section 6)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hopx_async import (
    APIError,
    AuthenticationError,
    ExecutionResult,
    NotFoundError,
    ProcessInfo,
    ProcessNotFoundError,
    ProcessResult,
    RateLimitError,
    SandboxInfo,
    SandboxNotFoundError,
    ServerError,
    ServiceUnavailableError,
    TokenExpiredError,
)
from hopx_async._errors import error_from_response, parse_error_body
from hopx_async._lists import process_list


def test_documented_process_fields() -> None:
    info = ProcessInfo.from_wire(
        {
            "process_id": "proc_1",
            "execution_id": "exec_1",
            "name": "job",
            "status": "completed",
            "language": "python",
            "started_at": "2026-01-02T03:04:05Z",
            "completed_at": "2026-01-02T03:04:07.500Z",
            "stdout": "hi\n",
            "stderr": "",
            "exit_code": 0,
            "execution_time": 2.5,
        }
    )
    assert info.started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert info.completed_at is not None and info.completed_at.microsecond == 500000
    assert info.is_done and info.exit_code == 0 and info.execution_time == 2.5


def test_generated_model_field_names() -> None:
    info = ProcessInfo.from_wire(
        {
            "process_id": "proc_2",
            "status": "running",
            "start_time": "2026-01-02T03:04:05+00:00",
            "end_time": None,
            "duration": 1.25,
            "pid": 4242,
        }
    )
    assert info.started_at is not None and info.started_at.year == 2026
    assert info.completed_at is None
    assert info.execution_time == 1.25
    assert info.pid == 4242
    assert info.stdout == "" and info["start_time"] == info.started_at


def test_unknown_status_and_fields_are_kept_or_ignored() -> None:
    info = ProcessInfo.from_wire({"process_id": "p", "status": "hibernating", "shiny": 1})
    assert info.status == "hibernating"
    assert not info.is_done
    assert "shiny" not in info


def test_dict_access_as_in_the_documentation() -> None:
    info = ProcessInfo.from_wire({"process_id": "p", "status": "completed", "name": None})
    assert info["process_id"] == "p"
    assert info["status"] == "completed"
    assert info.get("stdout", "") == ""
    assert info.get("name", "unnamed") == "unnamed"
    assert info.get("nonexistent", 7) == 7
    with pytest.raises(KeyError):
        info["nonexistent"]


def test_process_list_envelopes() -> None:
    one = {"process_id": "p", "status": "running"}
    assert [i.process_id for i in process_list({"processes": [one], "count": 1})] == ["p"]
    assert [i.process_id for i in process_list({"data": [one]})] == ["p"]
    assert [i.process_id for i in process_list([one])] == ["p"]
    assert process_list({"processes": None}) == []


def test_sandbox_record_never_keeps_the_token() -> None:
    info = SandboxInfo.from_wire(
        {
            "id": "sbx_1",
            "status": "running",
            "auth_token": "secret-token",
            "resources": {"vcpu": 2, "memory_mb": 4096, "disk_mb": 10240},
            "expires_at": "2026-01-01T00:00:00Z",
        }
    )
    assert "secret-token" not in repr(info)
    assert info.resources is not None and info.resources.memory_mb == 4096
    assert info["sandbox_id"] == "sbx_1"


def test_execution_result_success_from_exit_code() -> None:
    assert ExecutionResult.from_wire({"stdout": "x", "exit_code": 0}).success
    assert not ExecutionResult.from_wire({"exit_code": 3}).success


def test_flat_error_body() -> None:
    err = error_from_response(
        404,
        {"error": "no such sandbox", "code": "RESOURCE_NOT_FOUND", "request_id": "req_1"},
        resource="sandbox",
    )
    assert isinstance(err, SandboxNotFoundError)
    assert (err.status, err.code, err.request_id) == (404, "RESOURCE_NOT_FOUND", "req_1")
    assert "no such sandbox" in str(err) and "req_1" in str(err)


def test_nested_error_body() -> None:
    body = {
        "error": {
            "message": "slow down",
            "code": "RATE_LIMIT_EXCEEDED",
            "request_id": "req_2",
            "details": {"retry_after_seconds": 7},
        }
    }
    assert parse_error_body(body) == ("slow down", "RATE_LIMIT_EXCEEDED", "req_2", 7.0)
    err = error_from_response(429, body)
    assert isinstance(err, RateLimitError) and err.retry_after == 7.0


def test_flat_retry_after_and_header_fallback() -> None:
    err = error_from_response(429, {"error": "x", "code": "RATE_LIMIT_EXCEEDED", "retry_after": 2})
    assert isinstance(err, RateLimitError) and err.retry_after == 2.0
    err = error_from_response(429, {"error": "x"}, retry_after=3.0)
    assert isinstance(err, RateLimitError) and err.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "INVALID_TOKEN", TokenExpiredError),
        (401, "AUTHENTICATION_REQUIRED", AuthenticationError),
        (404, "PROCESS_NOT_FOUND", ProcessNotFoundError),
        (404, "NOT_FOUND", NotFoundError),
        (503, "SERVICE_UNAVAILABLE", ServiceUnavailableError),
        (500, "INTERNAL_ERROR", ServerError),
        (418, None, APIError),
    ],
)
def test_error_classes_by_status_and_code(status: int, code: str | None, cls: type) -> None:
    err = error_from_response(status, {"error": "m", "code": code}, request_id="req_h")
    assert type(err) is cls
    assert err.request_id == "req_h"


def test_non_json_error_body() -> None:
    err = error_from_response(502, "<html>Bad gateway</html>")
    assert isinstance(err, ServerError) and err.status == 502 and "Bad gateway" in err.message


def test_timeout_errors_are_builtin_timeouts() -> None:
    from hopx_async import ExecutionTimeoutError, RequestTimeoutError, WaitTimeoutError

    for cls in (WaitTimeoutError, RequestTimeoutError, ExecutionTimeoutError):
        assert issubclass(cls, TimeoutError)


def test_process_failed_error_carries_the_result() -> None:
    from hopx_async import ProcessFailedError

    result = ProcessResult(
        process_id="p", status="failed", exit_code=2, stdout="", stderr="Traceback\nBoom: x\n"
    )
    err = ProcessFailedError(result)
    assert err.result is result
    assert "exit code 2" in str(err) and "Boom: x" in str(err)
    assert not result.ok
