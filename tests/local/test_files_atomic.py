"""Atomic writes: a SIGKILL of the server in the middle of ``/files/write`` over an existing
file leaves the old content or the new one, never a part, and the restart removes the
staging files (the write's own, and an upload's)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .helpers import Api
from .test_crash import KEY, free_port, serve

pytestmark = pytest.mark.anyio

OLD = b"old content\n" * 1000
NEW = os.urandom(12 * 1024 * 1024)
ATTEMPTS = 8


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _partial(workspace: Path) -> bool:
    return any(name.startswith(".hopx-write-") for name in os.listdir(workspace))


def _writing(workspace: Path) -> bool:
    """The write is under way: beside the old file, or (were it written in place) into it."""
    with contextlib.suppress(FileNotFoundError):
        if (workspace / "big.bin").stat().st_size != len(OLD):
            return True
    return _partial(workspace)


async def test_sigkill_mid_write_keeps_old_or_new(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    proc, base_url = serve(state, port, log)
    servers.append(proc)
    caught = 0
    async with aiohttp.ClientSession() as session:
        api = Api(session, base_url, KEY)
        sbx = await api.create()
        workspace = state / "sandboxes" / sbx.id / "workspace"
        body = {"path": "big.bin", "content": base64.b64encode(NEW).decode(), "encoding": "base64"}
        raw = json.dumps(body).encode()
        json_type = {"Content-Type": "application/json"}
        for _ in range(ATTEMPTS):
            old = {"path": "big.bin", "content": base64.b64encode(OLD).decode()}
            old["encoding"] = "base64"
            assert (await api.agent(sbx, "POST", "/files/write", json=old)).status == 200
            write = asyncio.ensure_future(
                api.agent(sbx, "POST", "/files/write", data=io.BytesIO(raw), headers=json_type)
            )
            while not write.done() and not _writing(workspace):
                await asyncio.sleep(0)
            if write.done():  # finished before it was seen: try again
                assert write.result().status == 200
                continue
            proc.kill()
            proc.wait()
            caught += 1
            with pytest.raises(aiohttp.ClientError):
                await write
            proc, base_url = serve(state, port, log)
            servers.append(proc)
            kept = (workspace / "big.bin").read_bytes()
            assert kept in (OLD, NEW), f"{len(kept)} bytes: neither the old file nor the new"
            assert not _partial(workspace), "the restart removed the unfinished write"
            assert not [n for n in os.listdir(workspace.parent / "uploads")]
            break
    if not caught:
        pytest.skip(f"every write finished before it could be killed ({ATTEMPTS} tries)")


async def test_upload_staging_swept_at_restart(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    """An upload whose body stops half way, then a SIGKILL: the staging file is gone after
    the restart, and the target was never touched."""
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    proc, base_url = serve(state, port, log)
    servers.append(proc)
    async with aiohttp.ClientSession() as session:
        api = Api(session, base_url, KEY)
        sbx = await api.create()
        staging = state / "sandboxes" / sbx.id / "uploads"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nup.bin\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="up.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode() + b"x" * 300_000
        request = (
            f"POST /sandboxes/{sbx.id}/files/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {sbx.token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + 1_000_000}\r\n\r\n"
        ).encode()
        writer.write(request + head)
        await writer.drain()
        for _ in range(2000):
            if staging.exists() and any(n.startswith(".upload-") for n in os.listdir(staging)):
                break
            await asyncio.sleep(0.01)
        assert any(n.startswith(".upload-") for n in os.listdir(staging))
        proc.kill()
        proc.wait()
        writer.close()
        del reader
        proc, base_url = serve(state, port, log)
        servers.append(proc)
        assert os.listdir(staging) == []
        assert not (state / "sandboxes" / sbx.id / "workspace" / "up.bin").exists()
