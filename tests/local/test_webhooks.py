"""``POST /execute/async``: a real aiohttp receiver on loopback gets signed callbacks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async import WebhookVerificationError, verify_webhook
from hopx_async.local import LocalBackend

from .helpers import PY, Api, Sandbox, eventually
from .receiver import Receiver, free_port

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-0123456789"


def _deliveries(state_dir: Path) -> list[Path]:
    directory = state_dir / "webhooks"
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


async def _start(api: Api, sbx: Sandbox, code: str, url: str, **extra: Any) -> dict[str, Any]:
    body = {"code": code, "callback_url": url, **extra}
    answer = await api.agent(sbx, "POST", "/execute/async", json=body)
    assert answer.status == 200, answer.body
    return dict(answer.body)


async def test_callback_is_signed_and_retried_once_after_a_500(
    backend: LocalBackend, api: Api, sbx: Sandbox
) -> None:
    async with Receiver(answers={"/hook": [500]}) as receiver:
        started = await _start(
            api,
            sbx,
            "print('hi from the hook')",
            f"{receiver.url}/hook",
            callback_headers={"Authorization": "Bearer receiver-token", "X-Trace": "t-1"},
            callback_signature_secret=SECRET,
        )
        assert started["status"] == "queued"
        assert started["callback_url"] == f"{receiver.url}/hook"
        assert started["execution_id"].startswith("exec_")
        hits = await receiver.hits_to("/hook", 2)
        assert backend.state_dir is not None
        # delivered: its file is gone, and nothing more is sent
        assert await eventually(lambda: not _deliveries(backend.state_dir))  # type: ignore[arg-type]
    assert len(receiver.hits) == 2
    first, retry = hits
    assert first.body == retry.body
    for hit in hits:
        verify_webhook(SECRET, hit.headers, hit.body)
        # as documented: HMAC-SHA256 over the timestamp's digits then the body, no separator
        signed = hit.headers["X-HOPX-Timestamp"].encode() + hit.body
        digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hit.headers["X-HOPX-Signature"] == f"sha256={digest}"
        assert hit.headers["Authorization"] == "Bearer receiver-token"
        assert hit.headers["X-Trace"] == "t-1"
        assert hit.headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        verify_webhook("another-secret", retry.headers, retry.body)
    result = json.loads(retry.body)
    assert result["execution_id"] == started["execution_id"]
    assert result["status"] == "completed"
    assert result["success"] is True
    assert result["stdout"] == "hi from the hook\n"
    assert result["exit_code"] == 0
    assert SECRET not in retry.body.decode()
    # the execution is a background process of the sandbox, listed like any other
    listed = await api.agent(sbx, "GET", "/execute/processes")
    by_exec = {p["execution_id"]: p for p in listed.body["processes"]}
    assert by_exec[started["execution_id"]]["process_id"] == started["process_id"]
    assert SECRET not in json.dumps(listed.body)


async def test_failed_code_reports_failure_without_a_secret(api: Api, sbx: Sandbox) -> None:
    async with Receiver() as receiver:
        started = await _start(
            api, sbx, "import sys; print('bad', file=sys.stderr); sys.exit(3)", receiver.url
        )
        (hit,) = await receiver.hits_to("/", 1)
    assert "X-HOPX-Signature" not in hit.headers
    assert hit.headers["X-HOPX-Timestamp"].isdigit()
    result = json.loads(hit.body)
    assert result["execution_id"] == started["execution_id"]
    assert result["status"] == "failed"
    assert result["success"] is False
    assert result["exit_code"] == 3
    assert result["stderr"] == "bad\n"


async def test_a_pending_delivery_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hopx_async.local")
    state_dir = tmp_path / "state"
    port = free_port()  # the receiver is down: every attempt is refused
    first = LocalBackend(state_dir)
    first.callback_retry_delay = 0.05
    first.callback_attempts = 1000
    async with first, aiohttp.ClientSession() as session:
        api = Api(session, first.base_url, first.api_key)
        sbx = await api.create()
        started = await _start(
            api,
            sbx,
            "print('done before the restart')",
            f"http://127.0.0.1:{port}/late",
            callback_signature_secret=SECRET,
        )
        finished = await api.wait_done(sbx, started["process_id"])
        assert finished["status"] == "completed"

        def attempted() -> bool:
            files = _deliveries(state_dir)
            return bool(files) and json.loads(files[0].read_text())["attempts"] >= 1

        assert await eventually(attempted)
    (pending,) = _deliveries(state_dir)
    assert stat.S_IMODE(os.stat(pending).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pending.parent).st_mode) == 0o700
    async with Receiver(port) as receiver:
        second = LocalBackend(state_dir)
        async with second:
            (hit,) = await receiver.hits_to("/late", 1)
            assert await eventually(lambda: not _deliveries(state_dir))
    verify_webhook(SECRET, hit.headers, hit.body)
    result = json.loads(hit.body)
    assert result["execution_id"] == started["execution_id"]
    assert result["stdout"] == "done before the restart\n"
    assert SECRET not in caplog.text


async def test_an_execution_cut_by_a_stop_is_reported_after_the_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with Receiver() as receiver:
        first = LocalBackend(state_dir)
        async with first, aiohttp.ClientSession() as session:
            api = Api(session, first.base_url, first.api_key)
            sbx = await api.create()
            started = await _start(api, sbx, "import time; time.sleep(600)", receiver.url)
            assert _deliveries(state_dir)
        assert not receiver.hits  # nothing is sent while stopping
        async with LocalBackend(state_dir):
            (hit,) = await receiver.hits_to("/", 1)
    result = json.loads(hit.body)
    assert result["execution_id"] == started["execution_id"]
    assert result["status"] in ("killed", "failed")
    assert result["success"] is False


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state")
    backend.callback_attempts = 1  # a redirect is a failed attempt, and the last one here
    async with backend, aiohttp.ClientSession() as session:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        async with Receiver(answers={"/hook": [307]}) as receiver:
            await _start(api, sbx, "print(1)", f"{receiver.url}/hook")
            await receiver.hits_to("/hook", 1)
            assert await eventually(lambda: not _deliveries(tmp_path / "state"))
    assert [hit.path for hit in receiver.hits] == ["/hook"]  # never /elsewhere


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://example.com/hook", "CALLBACK_NOT_ALLOWED"),
        ("http://10.1.2.3:8080/hook", "CALLBACK_NOT_ALLOWED"),
        ("http://[fd00::1]/hook", "CALLBACK_NOT_ALLOWED"),
        ("http://169.254.169.254/latest/meta-data", "CALLBACK_NOT_ALLOWED"),
        ("http://127.0.0.1.nip.io/hook", "CALLBACK_NOT_ALLOWED"),
        ("ftp://127.0.0.1/hook", "INVALID_REQUEST"),
        ("http://user:pw@127.0.0.1/hook", "INVALID_REQUEST"),
        ("/relative", "INVALID_REQUEST"),
        ("", "INVALID_REQUEST"),
    ],
)
async def test_callback_hosts_default_to_loopback(
    api: Api, sbx: Sandbox, url: str, code: str
) -> None:
    body = {"code": f"open('/workspace/ran-{code}', 'w')", "callback_url": url}
    answer = await api.agent(sbx, "POST", "/execute/async", json=body)
    answer.expect_error(400, code)
    listed = await api.agent(sbx, "GET", "/execute/processes")
    assert listed.body["processes"] == []  # refused before anything ran


@pytest.mark.parametrize(
    "extra",
    [
        {"callback_headers": {"Content-Type": "text/plain"}},
        {"callback_headers": {"X-HOPX-Signature": "sha256=00"}},
        {"callback_headers": {"Bad Name": "x"}},
        {"callback_headers": {"X-Ok": "line\nbreak"}},
        {"callback_headers": ["not", "a", "dict"]},
        {"callback_signature_secret": ""},
        {"callback_signature_secret": 12},
    ],
)
async def test_bad_callback_fields_are_refused(
    api: Api, sbx: Sandbox, extra: dict[str, Any]
) -> None:
    body = {"code": "print(1)", "callback_url": "http://127.0.0.1:9/hook", **extra}
    answer = await api.agent(sbx, "POST", "/execute/async", json=body)
    answer.expect_error(400, "INVALID_REQUEST")


async def test_callback_hosts_are_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer_to(backend: LocalBackend, url: str) -> int:
        async with aiohttp.ClientSession() as session:
            api = Api(session, backend.base_url, backend.api_key)
            sbx = await api.create()
            body = {"code": "print(1)", "callback_url": url}
            return (await api.agent(sbx, "POST", "/execute/async", json=body)).status

    # TEST-NET-1 (never routed): accepted by the allow-list; the delivery is left pending.
    url = "http://192.0.2.10:9/hook"
    async with LocalBackend(tmp_path / "a", callback_hosts=["192.0.2.0/24"]) as backend:
        assert await answer_to(backend, url) == 200
        assert await answer_to(backend, "http://127.0.0.1:9/hook") == 400  # no loopback now
    monkeypatch.setenv("HOPX_LOCAL_CALLBACK_HOSTS", "hooks.test, 192.0.2.10")
    async with LocalBackend(tmp_path / "b") as backend:
        assert await answer_to(backend, url) == 200
        assert await answer_to(backend, "http://hooks.test:9/x") == 200
        assert await answer_to(backend, "http://192.0.2.11:9/hook") == 400
    with pytest.raises(ValueError, match="callback_hosts"):
        LocalBackend(callback_hosts="localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a host"):
        LocalBackend(callback_hosts=["http://x/"])


def test_serve_documents_the_callback_host_flag() -> None:
    import subprocess

    out = subprocess.run(
        [PY, "-m", "hopx_async.local", "serve", "--help"], capture_output=True, text=True
    )
    assert "--callback-host" in out.stdout


async def test_timeout_and_deleted_sandbox_are_reported(api: Api) -> None:
    async with Receiver() as receiver:
        sbx = await api.create()
        timed = await _start(api, sbx, "import time; time.sleep(60)", receiver.url, timeout=1)
        (hit,) = await receiver.hits_to("/", 1)
        result = json.loads(hit.body)
        assert result["execution_id"] == timed["execution_id"]
        assert result["status"] == "timeout"
        assert "timed out" in result["error"]
        cut = await _start(api, sbx, "import time; time.sleep(600)", f"{receiver.url}/gone")
        await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")
        (hit,) = await receiver.hits_to("/gone", 1)
    result = json.loads(hit.body)
    assert result["execution_id"] == cut["execution_id"]
    assert result["status"] == "killed"
    assert result["success"] is False


def test_the_secret_and_headers_stay_out_of_reprs() -> None:
    from hopx_async.local.service.callbacks import Callback

    callback = Callback("http://127.0.0.1/h", {"Authorization": "Bearer hdr-secret"}, SECRET)
    assert SECRET not in repr(callback)
    assert "hdr-secret" not in repr(callback)
