"""The fan-out behind ``hopx map``: many tasks over a few sandboxes, a bounded number at once.

:func:`run_many` has the shape of the SDK's batch call (``tasks, *, sandboxes,
max_concurrency, timeout, check, on_progress``) and is written on the public API only
(``run_code_background``, ``commands.run(background=True)``, ``wait``), so that the command
line can switch to the SDK's own when it offers one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import attrs

from hopx_async import (
    AsyncBackgroundProcess,
    AsyncSandbox,
    ProcessFailedError,
    ProcessResult,
    ProcessStatus,
    WaitTimeoutError,
)

#: ``on_progress(done, total, result)``, called as each task ends
Progress = Callable[[int, int, ProcessResult], None]


@attrs.frozen(kw_only=True)
class Task:
    """One unit of work: code in ``language``, or a shell ``command``."""

    code: str | None = None
    command: str | None = None
    language: str = "python"
    env: Mapping[str, str] = attrs.field(factory=dict)
    name: str | None = None
    timeout: int = 300
    working_dir: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.code is None) == (self.command is None):
            raise ValueError("a task has either code or a command")


async def start_task(sandbox: AsyncSandbox, task: Task) -> AsyncBackgroundProcess:
    """Start ``task`` in the background in ``sandbox``."""
    if task.command is not None:
        return await sandbox.commands.run(
            task.command,
            background=True,
            timeout=task.timeout,
            env=task.env,
            name=task.name,
            working_dir=task.working_dir,
        )
    assert task.code is not None
    return await sandbox.run_code_background(
        task.code,
        language=task.language,
        timeout=task.timeout,
        env=task.env,
        name=task.name,
        working_dir=task.working_dir,
    )


async def run_many(
    tasks: Sequence[Task],
    *,
    sandboxes: Sequence[AsyncSandbox],
    max_concurrency: int = 8,
    timeout: float | None = None,
    check: bool = False,
    on_progress: Progress | None = None,
) -> list[ProcessResult]:
    """Run every task, at most ``max_concurrency`` at once; results in the order given.

    Task ``i`` runs in ``sandboxes[i % len(sandboxes)]``. ``timeout`` bounds the whole
    run (:class:`WaitTimeoutError`; started processes keep running); ``check=True`` raises
    :class:`ProcessFailedError` for the first unsuccessful task after all have ended.
    """
    if not sandboxes:
        raise ValueError("run_many needs at least one sandbox")
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    gate = asyncio.Semaphore(max_concurrency)
    total = len(tasks)
    done = 0

    async def one(index: int, task: Task) -> ProcessResult:
        nonlocal done
        async with gate:
            proc = await start_task(sandboxes[index % len(sandboxes)], task)
            result = await proc.wait()
        done += 1
        if on_progress is not None:
            on_progress(done, total, result)
        return result

    jobs = [asyncio.ensure_future(one(i, t)) for i, t in enumerate(tasks)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*jobs), timeout)
    except asyncio.TimeoutError:
        raise WaitTimeoutError(
            f"{total - done} of {total} tasks not finished after {timeout:g}s "
            "(started ones keep running)"
        ) from None
    finally:
        for job in jobs:
            job.cancel()
    if check:
        for result in results:
            if result.status in ProcessStatus.UNSUCCESSFUL:
                raise ProcessFailedError(result)
    return list(results)
