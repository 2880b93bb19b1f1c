"""The official `hopx-ai` 0.5.0 SDK (sync and async) against the local backend: files, env,
background commands read back through files, and ``run_code`` past its timeout.

Skipped, with the reason, when ``hopx_ai`` is not installed (the ``bench`` extra has it).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import pytest

from hopx_async.local import LocalBackend

hopx_ai: Any = pytest.importorskip(
    "hopx_ai", reason="the official SDK hopx-ai is not installed (pip install -e '.[bench]')"
)

# hopx-ai 0.5.0 never closes some of its httpx clients (docs/wire.md, section 5); their
# ResourceWarnings, collected inside these tests, are expected.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: bytes that are not valid base64 (the official read_bytes decodes anything that is)
BINARY = b"\x00\x01\xfe\xff binary \x80"


def _wait_for_file(exists: Any, path: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_official_sync_sdk_files_env_commands(backend: LocalBackend, tmp_path: Path) -> None:
    sandbox = hopx_ai.Sandbox.create(
        template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
    )
    try:
        files = sandbox.files
        files.write("/workspace/hello.txt", "hello from hopx-ai\n")
        assert files.read("/workspace/hello.txt") == "hello from hopx-ai\n"
        assert files.exists("/workspace/hello.txt") is True
        assert files.exists("/workspace/nothing.txt") is False
        files.write_bytes("/workspace/data.bin", BINARY)
        assert files.read_bytes("/workspace/data.bin") == BINARY
        files.mkdir("/workspace/sub")
        listed = {f.name: f for f in files.list("/workspace")}
        assert {"hello.txt", "data.bin", "sub"} <= set(listed)
        assert listed["sub"].is_directory is True
        assert listed["hello.txt"].size == len("hello from hopx-ai\n")

        local = tmp_path / "upload.bin"
        local.write_bytes(BINARY * 1000)
        files.upload(str(local), "/workspace/sub/upload.bin")
        back = tmp_path / "download.bin"
        files.download("/workspace/sub/upload.bin", str(back))
        assert back.read_bytes() == local.read_bytes()
        files.remove("/workspace/sub")
        assert files.exists("/workspace/sub") is False

        env = sandbox.env.get_all()
        assert {"PATH", "HOME"} <= set(env), "the base environment is shown"
        sandbox.env.set("GREETING", "hi")
        sandbox.env.update({"API_KEY": "sk-1", "OTHER": "x"})
        assert sandbox.env.get("GREETING") == "hi"
        assert sandbox.env.get("API_KEY") == "***MASKED***"
        sandbox.env.delete("GREETING")  # a GET, then a PUT of the rest, masked values too
        assert sandbox.env.get("GREETING") is None
        run = sandbox.commands.run("echo $API_KEY $OTHER $GREETING.")
        assert run.stdout == "sk-1 x .\n", "the masked secret kept its value"
        sandbox.env.set_all({"ONLY": "1"})
        assert "OTHER" not in sandbox.env.get_all()

        started = sandbox.commands.run(
            'echo "$ONLY done" > "$PWD/job.tmp" && mv "$PWD/job.tmp" "$PWD/job.txt"',
            background=True,
            working_dir="/workspace/jobs",
        )
        assert "proc_" in started.stdout
        _wait_for_file(files.exists, "/workspace/jobs/job.txt")
        assert files.read("/workspace/jobs/job.txt") == "1 done\n"

        slow = sandbox.run_code(
            "import time\nprint('begun', flush=True)\ntime.sleep(30)", timeout=1
        )
        assert slow.success is False
        assert slow.exit_code == 124
        assert slow.stdout == "begun\n"
        assert "timed out" in slow.stderr
    finally:
        sandbox.kill()
    sandbox._client.close()
    del sandbox
    gc.collect()


@pytest.mark.anyio
async def test_official_async_sdk_files_env_commands(backend: LocalBackend) -> None:
    import anyio

    sandbox = await hopx_ai.AsyncSandbox.create(
        template="code-interpreter", api_key=backend.api_key, base_url=backend.base_url
    )
    try:
        files = sandbox.files
        await files.write("/workspace/a.txt", "async text\n")
        assert await files.read("/workspace/a.txt") == "async text\n"
        await files.write_bytes("/workspace/a.bin", BINARY)
        assert await files.read_bytes("/workspace/a.bin") == BINARY
        assert await files.exists("/workspace/a.txt") is True
        await files.mkdir("/workspace/d")
        names = {f.name for f in await files.list("/workspace")}
        assert {"a.txt", "a.bin", "d"} <= names
        await files.remove("/workspace/a.txt")
        assert await files.exists("/workspace/a.txt") is False

        assert "PATH" in await sandbox.env.get_all()
        await sandbox.env.set("MODE", "async")
        await sandbox.env.update({"DB_PASSWORD": "pw", "KEEP": "k"})
        await sandbox.env.delete("MODE")
        assert await sandbox.env.get("MODE") is None
        run = await sandbox.commands.run("echo $DB_PASSWORD $KEEP")
        assert run.stdout == "pw k\n"
        await sandbox.env.set_all({"ONLY": "2"})

        await sandbox.commands.run(
            'echo "$ONLY later" > "$PWD/job.tmp" && mv "$PWD/job.tmp" "$PWD/job.txt"',
            background=True,
            working_dir="/workspace/d",
        )
        with anyio.fail_after(20):
            while not await files.exists("/workspace/d/job.txt"):
                await anyio.sleep(0.05)
        assert await files.read("/workspace/d/job.txt") == "2 later\n"

        slow = await sandbox.run_code("echo begun; sleep 30", language="bash", timeout_seconds=1)
        assert slow.success is False
        assert slow.exit_code == 124
        assert slow.stdout == "begun\n"
    finally:
        await sandbox.kill()
    for name in ("_agent_client", "_client"):
        client = getattr(sandbox, name, None)
        if client is not None and hasattr(client, "close"):
            await client.close()
    del sandbox
    gc.collect()
