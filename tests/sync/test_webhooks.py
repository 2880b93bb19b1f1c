"""The blocking twin of ``run_code_async()``: ``Execution``, waited on through the process list."""

from __future__ import annotations

import http.server
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hopx_sync import BackgroundProcess, Execution, Sandbox, verify_webhook

SECRET = "sync-webhook-secret"


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    """A real receiver on loopback, in a thread (this side of the test blocks)."""
    got: queue.Queue[dict[str, Any]] = queue.Queue()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            verify_webhook(SECRET, dict(self.headers.items()), body)
            got.put(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_run_code_async_blocking(
    sandbox: Sandbox, receiver: tuple[str, queue.Queue[dict[str, Any]]]
) -> None:
    url, got = receiver
    execution = sandbox.run_code_async(
        "print('sync hook')", callback_url=url, callback_signature_secret=SECRET
    )
    assert isinstance(execution, Execution)
    assert isinstance(execution.process, BackgroundProcess)
    assert execution["callback_url"] == url
    result = execution.wait(timeout=60, check=True)
    assert result.stdout == "sync hook\n"
    delivered = got.get(timeout=30)
    assert delivered["execution_id"] == execution.execution_id
    assert delivered["stdout"] == "sync hook\n"
