"""Fan-out: wait for many processes, and start many tasks with bounded concurrency.

Everything runs on an anyio task group: when one part fails (a callback raises, a process
fails with ``check=True``, the caller's timeout ends) the rest is cancelled and nothing is
left waiting or running on the client.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from . import _validation as validate
from ._errors import HopxError, ValidationError, WaitTimeoutError
from ._models import ProcessResult
from ._process import AsyncBackgroundProcess

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["ProgressCallback", "Task", "as_completed", "run_many", "wait_all"]

#: ``on_progress(done, total, result)``, called as each process ends
ProgressCallback = Callable[[int, int, ProcessResult], None]


def _env(value: Any) -> Mapping[str, str] | None:
    return validate.env_vars("env", value)


def _env_repr(value: Mapping[str, str] | None) -> str:
    """The names only: values may be secrets."""
    return "None" if value is None else "{" + ", ".join(f"{k!r}: '***'" for k in value) + "}"


@attrs.frozen(kw_only=True)
class Task:
    """One unit of work for :meth:`AsyncHopx.run_many`: code or a shell command.

    Give exactly one of ``code`` (run in ``language``, default python) and ``command``
    (``/bin/sh -c``). ``timeout`` is the process's lifetime on the server (default 300 s).

    >>> Task(code="print(6 * 7)", name="answer").name
    'answer'
    >>> Task(command="ls -la").command
    'ls -la'
    """

    code: str | None = None
    command: str | None = None
    language: str = "python"
    env: Mapping[str, str] | None = attrs.field(default=None, converter=_env, repr=_env_repr)
    name: str | None = None
    timeout: float = 300
    working_dir: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.code is None) == (self.command is None):
            raise ValidationError("task", "give exactly one of code= and command=")
        if self.code is not None:
            validate.non_empty_str("code", self.code)
            validate.language(self.language)
        else:
            validate.non_empty_str("command", self.command)
        validate.positive_number("timeout", self.timeout)
        validate.optional_str("name", self.name)
        validate.optional_str("working_dir", self.working_dir)


def check_callback(on_progress: Any) -> None:
    if on_progress is not None and not callable(on_progress):
        raise ValidationError(
            "on_progress", f"expected a function (done, total, result), got {on_progress!r}"
        )


def handles(processes: Iterable[AsyncBackgroundProcess]) -> list[AsyncBackgroundProcess]:
    """The processes as a list, each checked to be a handle."""
    procs = list(processes)
    for item in procs:
        if not isinstance(item, AsyncBackgroundProcess):
            raise ValidationError(
                "processes",
                f"expected handles returned by run_code_background(), got {type(item).__name__}",
            )
    return procs


class _Tally:
    """The per-item bookkeeping of one fan-out: results in the order given, the progress
    callback, and the first failure (which cancels the rest)."""

    __slots__ = ("done", "failure", "on_progress", "results", "total", "unfinished")

    def __init__(
        self, total: int, on_progress: ProgressCallback | None, *, unfinished: str
    ) -> None:
        #: the timeout's message, formatted with ``left`` ("3 of 10") and ``limit`` (seconds)
        self.unfinished = unfinished
        self.total = total
        self.done = 0
        self.results: list[ProcessResult | None] = [None] * total
        self.failure: BaseException | None = None
        self.on_progress = on_progress

    def ended(self, index: int, result: ProcessResult) -> None:
        """Item ``index`` ended with ``result`` (the callback may raise: the caller fails)."""
        self.results[index] = result
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, result)

    def failed(self, error: BaseException, scope: anyio.CancelScope) -> None:
        """An item failed: the first failure is kept, and the rest is cancelled."""
        if self.failure is None:
            self.failure = error
        scope.cancel()

    async def run(
        self,
        limit: float | None,
        one: Callable[[int, anyio.CancelScope], Coroutine[Any, Any, None]],
    ) -> list[ProcessResult]:
        """``one(index, scope)`` for every item on a task group, within ``limit`` seconds;
        the results, or the first failure raised (a timeout as :class:`WaitTimeoutError`)."""
        with anyio.move_on_after(limit) as timer:
            async with anyio.create_task_group() as group:
                for index in range(self.total):
                    group.start_soon(one, index, group.cancel_scope)
        if self.failure is not None:
            raise self.failure
        if timer.cancelled_caught:
            assert limit is not None
            left = f"{self.total - self.done} of {self.total}"
            raise WaitTimeoutError(self.unfinished.format(left=left, limit=limit))
        return [r for r in self.results if r is not None]


async def wait_all(
    processes: Iterable[AsyncBackgroundProcess],
    *,
    timeout: float | None = None,
    check: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[ProcessResult]:
    """Wait for every process; results in the order given. See :meth:`AsyncHopx.wait_all`."""
    procs = handles(processes)
    limit = validate.optional_timeout("timeout", timeout)
    check_callback(on_progress)
    tally = _Tally(
        len(procs),
        on_progress,
        unfinished="{left} processes still running after {limit:g}s (they keep running)",
    )

    async def one(index: int, scope: anyio.CancelScope) -> None:
        try:
            tally.ended(index, await procs[index].wait(check=check))
        except Exception as exc:
            tally.failed(exc, scope)

    return await tally.run(limit, one)


async def as_completed(
    processes: Iterable[AsyncBackgroundProcess], *, timeout: float | None = None
) -> AsyncGenerator[ProcessResult, None]:
    """Yield each result as soon as its process ends. See :meth:`AsyncHopx.as_completed`."""
    procs = handles(processes)
    limit = validate.optional_timeout("timeout", timeout)
    tasks = [asyncio.ensure_future(p.wait()) for p in procs]
    remaining = len(tasks)
    try:
        for fut in asyncio.as_completed(tasks, timeout=limit):
            try:
                result = await fut
            except asyncio.TimeoutError:
                assert limit is not None
                raise WaitTimeoutError(
                    f"{remaining} of {len(tasks)} processes still running after "
                    f"{limit:g}s (they keep running)"
                ) from None
            remaining -= 1
            yield result
    finally:
        for task in tasks:
            task.cancel()
        # collect them, so that no waiter outlives the iteration (nor warns later)
        await asyncio.gather(*tasks, return_exceptions=True)


async def start_task(sandbox: AsyncSandbox, task: Task) -> AsyncBackgroundProcess:
    """Start one task in ``sandbox`` in the background."""
    if task.code is not None:
        return await sandbox.run_code_background(
            task.code,
            language=task.language,
            timeout=task.timeout,
            env=task.env,
            name=task.name,
            working_dir=task.working_dir,
        )
    assert task.command is not None
    return await sandbox.commands.run(
        task.command,
        background=True,
        timeout=task.timeout,
        env=task.env,
        name=task.name,
        working_dir=task.working_dir,
    )


def check_tasks(
    tasks: Iterable[Task], sandboxes: Iterable[AsyncSandbox], max_concurrency: int
) -> tuple[list[Task], list[AsyncSandbox]]:
    """The arguments of :func:`run_many`, checked before any I/O."""
    if isinstance(tasks, (str, bytes, Mapping)):
        raise ValidationError("tasks", "expected an iterable of Task")
    items = list(tasks)
    for item in items:
        if not isinstance(item, Task):
            raise ValidationError("tasks", f"expected Task objects, got {type(item).__name__}")
    if isinstance(sandboxes, (str, bytes, Mapping)):
        raise ValidationError("sandboxes", "expected a list of sandboxes")
    boxes = list(sandboxes)
    if not boxes:
        raise ValidationError("sandboxes", "expected at least one sandbox")
    for box in boxes:
        if not hasattr(box, "run_code_background") or not hasattr(box, "commands"):
            raise ValidationError("sandboxes", f"expected sandboxes, got {type(box).__name__}")
    validate.positive_int("max_concurrency", max_concurrency)
    return items, boxes


async def run_many(
    tasks: Iterable[Task],
    *,
    sandboxes: Sequence[AsyncSandbox],
    max_concurrency: int = 8,
    timeout: float | None = None,
    check: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[ProcessResult]:
    """Run tasks over sandboxes, at most ``max_concurrency`` at once. See
    :meth:`AsyncHopx.run_many`."""
    items, boxes = check_tasks(tasks, sandboxes, max_concurrency)
    limit = validate.optional_timeout("timeout", timeout)
    check_callback(on_progress)
    tally = _Tally(
        len(items),
        on_progress,
        unfinished="{left} tasks not finished after {limit:g}s (the started ones were killed)",
    )
    limiter = anyio.Semaphore(min(max_concurrency, max(len(items), 1)))
    spread = itertools.cycle(boxes)
    placed = [next(spread) for _ in items]

    async def one(index: int, scope: anyio.CancelScope) -> None:
        async with limiter:
            if tally.failure is not None:
                return
            proc: AsyncBackgroundProcess | None = None
            try:
                # a start in flight completes, so that its process is known and can be killed
                with anyio.CancelScope(shield=True):
                    proc = await start_task(placed[index], items[index])
                assert proc is not None
                tally.ended(index, await proc.wait(check=check))
            except Exception as exc:
                tally.failed(exc, scope)  # before the slot is freed: nothing else starts
                if proc is not None:
                    await _kill_quietly(proc)
            except BaseException:  # cancelled: end what this task started
                if proc is not None:
                    await _kill_quietly(proc)
                raise

    return await tally.run(limit, one)


async def _kill_quietly(proc: AsyncBackgroundProcess) -> None:
    """Kill a process this run started, even while the run is being cancelled."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(30):
        try:
            await proc.kill()
        except HopxError:
            pass
