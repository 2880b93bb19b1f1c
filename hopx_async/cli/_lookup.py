"""Finding what a command names: the sandboxes in scope, their processes, one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from hopx_async import AsyncHopx, AsyncSandbox, NotFoundError, ProcessInfo, ProcessNotFoundError

from ._common import CliError, Ref, default_sandbox
from ._hints import paused

T = TypeVar("T")


async def in_scope(
    client: AsyncHopx, sandbox_flag: str | None, all_sandboxes: bool
) -> list[AsyncSandbox]:
    """The sandboxes a command looks at: --sandbox, HOPX_SANDBOX, or every running one."""
    chosen = None if all_sandboxes else default_sandbox(sandbox_flag)
    if chosen:
        return [await client.sandboxes.connect(chosen)]
    ids = [info.id async for info in client.sandboxes.list() if info.status == "running"]
    found = await asyncio.gather(
        *(client.sandboxes.connect(i) for i in ids), return_exceptions=True
    )
    return [value_or_raise(s) for s in found if not isinstance(s, NotFoundError)]


def value_or_raise(value: T | BaseException) -> T:
    """``value``, or raise it if it is an error (from ``gather(return_exceptions=True)``)."""
    if isinstance(value, BaseException):
        raise value
    return value


async def processes_of(
    sandboxes: Sequence[AsyncSandbox], status: str | None, name: str | None
) -> list[tuple[Ref, ProcessInfo]]:
    """Every process of ``sandboxes``; a sandbox killed meanwhile counts as having none."""
    lists = await asyncio.gather(
        *(s.list_processes(status=status, name=name) for s in sandboxes), return_exceptions=True
    )
    return [
        (Ref(s.id, info.process_id), info)
        for s, infos in zip(sandboxes, lists, strict=True)
        if not isinstance(infos, NotFoundError)
        for info in value_or_raise(infos)
    ]


async def connect_running(client: AsyncHopx, sandbox_id: str) -> AsyncSandbox:
    """The sandbox, for a command that needs it running: a paused one is an error at once
    that names ``hopx sandbox resume`` (where the service's agent answers a paused sandbox
    with 502, the SDK would wait for it to be resumed)."""
    sandbox = await client.sandboxes.connect(sandbox_id)
    if sandbox.info.status == "paused":
        raise CliError(paused(sandbox_id))
    return sandbox


async def get_process(sandbox: AsyncSandbox, ref: Ref) -> ProcessInfo:
    try:
        return await sandbox.get_process(ref.process_id)
    except ProcessNotFoundError:
        raise CliError(f"no process {ref.process_id} in sandbox {ref.sandbox_id}") from None


async def connect_all(client: AsyncHopx, refs: Sequence[Ref]) -> dict[str, AsyncSandbox]:
    ids = sorted({r.sandbox_id for r in refs})
    sandboxes = await asyncio.gather(*(client.sandboxes.connect(i) for i in ids))
    return dict(zip(ids, sandboxes, strict=True))
