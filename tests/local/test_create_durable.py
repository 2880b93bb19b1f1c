"""A creation or deletion that was answered survives a SIGKILL of the server right after it.

The server is ``python -m hopx_async.local serve`` in a subprocess (as in ``test_crash``),
killed the moment an answer's status line arrives, and restarted on the same state dir: every
sandbox whose creation was answered is there, with a working workspace; every deletion that was
answered stays done, its directory gone. Each server is stopped with SIGTERM at the end (a
clean stop also unmounts the workspaces' images).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .test_crash import KEY, free_port, serve

pytestmark = pytest.mark.anyio

ROUNDS = 3
AT_ONCE = 8


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


async def create_then_kill(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[str]
) -> str | None:
    """Create a sandbox; SIGKILL the server as soon as the answer's status arrived."""
    headers = {"X-API-Key": KEY}
    body = {"template_name": "code-interpreter"}
    try:
        async with session.post(f"{base}/v1/sandboxes", json=body, headers=headers) as resp:
            kill(proc)  # before the body is even read
            made: Any = await resp.json()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None  # not answered: may or may not exist
    assert resp.status == 201, made
    return str(made["id"])


async def test_answered_creations_and_deletions_survive_a_sigkill(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    headers = {"X-API-Key": KEY}
    answered: list[str] = []
    deleted: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(ROUNDS):
            proc, base = serve(state, port, log)
            started.append(proc)
            made = await asyncio.gather(
                *(create_then_kill(session, base, proc) for _ in range(AT_ONCE))
            )
            answered += [sandbox_id for sandbox_id in made if sandbox_id]
            assert answered, log.read_text()
            proc, base = serve(state, port, log)
            started.append(proc)
            for sandbox_id in answered:
                got = await session.get(f"{base}/v1/sandboxes/{sandbox_id}", headers=headers)
                assert got.status == 200, (sandbox_id, await got.text(), log.read_text())
            # A deletion answered, then a kill at once: it stays deleted.
            victim = answered.pop(0)
            async with session.delete(f"{base}/v1/sandboxes/{victim}", headers=headers) as resp:
                kill(proc)
                assert resp.status == 200, await resp.text()
            deleted.append(victim)
        proc, base = serve(state, port, log)
        started.append(proc)
        for sandbox_id in deleted:
            got = await session.get(f"{base}/v1/sandboxes/{sandbox_id}", headers=headers)
            assert got.status == 404, await got.text()
            assert not (state / "sandboxes" / sandbox_id).exists()
        for sandbox_id in answered:
            got = await session.get(f"{base}/v1/sandboxes/{sandbox_id}", headers=headers)
            assert got.status == 200, await got.text()
            sbx = await got.json()
            agent = {"Authorization": f"Bearer {sbx['auth_token']}"}
            write = {"path": "/workspace/after.txt", "content": sandbox_id}
            host = sbx["public_host"].rstrip("/")
            wrote = await session.post(f"{host}/files/write", json=write, headers=agent)
            assert wrote.status == 200, await wrote.text()
