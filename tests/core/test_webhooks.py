"""``verify_webhook`` (no I/O) and the ``run_code_async()`` handle against the local backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hopx_async import (
    AsyncExecution,
    AsyncSandbox,
    HopxError,
    ValidationError,
    WebhookVerificationError,
    verify_webhook,
)
from hopx_async._webhooks import sign_webhook

SECRET = "whsec-core-test"
BODY = b'{"execution_id":"exec_1","status":"completed","stdout":"hi\\n"}'
NOW = 1_800_000_000


def _headers(secret: str = SECRET, stamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "X-HOPX-Timestamp": str(stamp),
        "X-HOPX-Signature": sign_webhook(secret, stamp, body),
    }


# ------------------------------------------------------------------------ verify_webhook
def test_a_good_signature_passes() -> None:
    verify_webhook(SECRET, _headers(), BODY, now=NOW)
    verify_webhook(SECRET.encode(), _headers(), BODY.decode(), now=NOW + 299)
    # header names are matched without regard to case, as HTTP has them
    lowered = {k.lower(): v for k, v in _headers().items()}
    verify_webhook(SECRET, lowered, BODY, now=NOW)


def test_the_signed_string_is_timestamp_then_body_without_separator() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}".encode() + BODY, hashlib.sha256).hexdigest()
    assert _headers()["X-HOPX-Signature"] == f"sha256={expected}"


@pytest.mark.parametrize(
    ("secret", "headers", "body", "message"),
    [
        (SECRET, _headers(), BODY.replace(b"completed", b"failed"), "does not match"),
        ("wrong-secret", _headers(), BODY, "does not match"),
        (SECRET, _headers(stamp=NOW - 301), BODY, "stale"),
        (SECRET, _headers(stamp=NOW + 301), BODY, "stale"),
        (SECRET, {"X-HOPX-Timestamp": str(NOW)}, BODY, "X-HOPX-Signature header is missing"),
        (
            SECRET,
            {"X-HOPX-Signature": _headers()["X-HOPX-Signature"]},
            BODY,
            "X-HOPX-Timestamp header is missing",
        ),
        (SECRET, {}, BODY, "missing"),
        (SECRET, {**_headers(), "X-HOPX-Timestamp": "soon"}, BODY, "unix seconds"),
        (SECRET, {**_headers(), "X-HOPX-Timestamp": "١٨٠٠٠٠٠٠٠٠"}, BODY, "unix seconds"),
        (
            SECRET,
            {**_headers(), "X-HOPX-Signature": _headers()["X-HOPX-Signature"][7:]},
            BODY,
            "sha256=",
        ),
        (SECRET, {**_headers(), "X-HOPX-Signature": "sha256=00"}, BODY, "does not match"),
    ],
    ids=[
        "tampered-body",
        "wrong-secret",
        "stale",
        "from-the-future",
        "no-signature",
        "no-timestamp",
        "no-headers",
        "bad-timestamp",
        "non-ascii-digits",
        "no-prefix",
        "short-signature",
    ],
)
def test_bad_signatures_raise(
    secret: str, headers: dict[str, str], body: bytes, message: str
) -> None:
    with pytest.raises(WebhookVerificationError, match=message) as err:
        verify_webhook(secret, headers, body, now=NOW)
    assert isinstance(err.value, HopxError)


def test_the_tolerance_is_configurable() -> None:
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify_webhook(SECRET, _headers(), BODY, now=NOW + 11, tolerance=10)
    verify_webhook(SECRET, _headers(stamp=NOW - 3600), BODY, now=NOW, tolerance=3600)


# ----------------------------------------------------------------- run_code_async handle
class _Receiver:
    """A real aiohttp receiver on loopback: verifies each callback and keeps its result."""

    def __init__(self) -> None:
        self.results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_webhook(SECRET, request.headers, body)
        except WebhookVerificationError as exc:
            return web.Response(status=401, text=str(exc))
        await self.results.put(json.loads(body))
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[_Receiver]:
    recv = _Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv._hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield recv
    await runner.cleanup()


@pytest.mark.anyio
async def test_run_code_async_returns_a_handle_that_waits(
    sandbox: AsyncSandbox, receiver: _Receiver
) -> None:
    execution = await sandbox.run_code_async(
        "print('from the webhook')",
        callback_url=receiver.url,
        callback_headers={"X-Receiver": "yes"},
        callback_signature_secret=SECRET,
        timeout=600,
    )
    assert isinstance(execution, AsyncExecution)
    assert execution.execution_id.startswith("exec_")
    assert execution["execution_id"] == execution.execution_id
    assert execution.get("callback_url") == execution.callback_url == receiver.url
    assert execution.get("stdout", "absent") == "absent"
    assert execution.process is not None
    assert execution.process_id == execution.process.id
    assert SECRET not in repr(execution)
    result = await execution.wait(timeout=60, check=True)
    assert result.stdout == "from the webhook\n"
    assert execution.status == "completed"
    delivered = await asyncio.wait_for(receiver.results.get(), 30)
    assert delivered["execution_id"] == execution.execution_id
    assert delivered["stdout"] == "from the webhook\n"


@pytest.mark.anyio
async def test_wait_finds_the_execution_in_the_process_list(
    sandbox: AsyncSandbox, receiver: _Receiver
) -> None:
    started = await sandbox.run_code_async(
        "print(6 * 7)", callback_url=receiver.url, callback_signature_secret=SECRET
    )
    # a handle knowing only the execution id (as the documented answer gives) finds its process
    bare = AsyncExecution(sandbox, started.execution_id, callback_url=receiver.url)
    assert bare.process is None and bare.status == "queued"
    result = await bare.wait(timeout=60)
    assert result.stdout == "42\n"
    assert bare.process_id == started.process_id
    unknown = AsyncExecution(sandbox, "exec_unknown", callback_url=receiver.url)
    with pytest.raises(HopxError, match="not in the sandbox's process list"):
        await unknown.wait(timeout=5)
    await asyncio.wait_for(receiver.results.get(), 30)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"callback_url": ""}, "callback_url"),
        ({"callback_url": "127.0.0.1:8080/hook"}, "callback_url"),
        ({"callback_url": "http://127.0.0.1/h", "callback_headers": ["x"]}, "callback_headers"),
        (
            {"callback_url": "http://127.0.0.1/h", "callback_headers": {"X": "a\nb"}},
            "callback_headers",
        ),
        (
            {"callback_url": "http://127.0.0.1/h", "callback_signature_secret": ""},
            "callback_signature_secret",
        ),
        ({"callback_url": "http://127.0.0.1/h", "timeout": 0}, "timeout"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    sandbox: AsyncSandbox, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await sandbox.run_code_async("print(1)", **kwargs)
    assert err.value.argument == argument
