"""The official `hopx-ai` SDK (sync, httpx) against the local backend."""

from __future__ import annotations

import gc
import time

import pytest

from hopx_async.local import LocalBackend


# hopx-ai 0.5.0 never closes the httpx clients of its class-level calls (docs/wire.md,
# section 5); collect them inside this test, where their ResourceWarnings are expected.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_official_sdk_background_list_kill(backend: LocalBackend) -> None:
    hopx_ai = pytest.importorskip("hopx_ai")
    sandbox = hopx_ai.Sandbox.create(
        template="code-interpreter",
        api_key=backend.api_key,
        base_url=backend.base_url,
        env_vars={"GREETING": "hi"},
    )
    try:
        info = sandbox.get_info()
        assert info.status == "running"
        assert info.public_host.startswith(backend.base_url)
        quick = sandbox.run_code_background(
            "import os; print(os.environ['GREETING'])", name="quick"
        )
        slow = sandbox.run_code_background("import time; time.sleep(60)", name="slow")
        assert quick["process_id"].startswith("proc_")
        deadline = time.monotonic() + 10
        while True:
            by_id = {p["process_id"]: p for p in sandbox.list_processes()}
            if by_id[quick["process_id"]]["status"] == "completed":
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert by_id[quick["process_id"]]["stdout"] == "hi\n"
        assert by_id[slow["process_id"]]["status"] == "running"
        killed = sandbox.kill_process(slow["process_id"])
        assert killed["status"] == "killed"
        by_id = {p["process_id"]: p for p in sandbox.list_processes()}
        assert by_id[slow["process_id"]]["status"] == "killed"
        result = sandbox.run_code("print(1 + 1)")
        assert result.stdout == "2\n"
        command = sandbox.commands.run("echo $GREETING; pwd", working_dir="/workspace/x")
        assert command.stdout.splitlines()[0] == "hi"
        assert sandbox.env.get("GREETING") == "hi"
        with pytest.raises(hopx_ai.errors.HopxError):
            sandbox.kill_process("proc_unknown")
    finally:
        sandbox.kill()
    with pytest.raises(hopx_ai.errors.NotFoundError):
        sandbox.get_info()
    sandbox._client.close()
    del sandbox
    gc.collect()
