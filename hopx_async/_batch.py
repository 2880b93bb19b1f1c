"""``run_many``: start many tasks over sandboxes, resumably (a manifest), with per-task
retries, a window of tasks in flight that adapts to 429/503 answers (:mod:`._pacing`), and
the sandboxes kept alive while their tasks run (:mod:`._keepalive`).

With a manifest (:mod:`._manifest`) every start is recorded before it is sent and named
after the manifest and the task, so that a run started again after its driver died takes
the finished tasks from the file, waits again on the running ones (by sandbox and process
id), finds a start that was in flight by its name in the sandbox's process list, and starts
only the tasks that never started: no task starts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from . import _validation as validate
from ._errors import (
    HopxError,
    ProcessFailedError,
    ProcessNotFoundError,
    RateLimitError,
    SandboxLostError,
    SandboxNotFoundError,
    ServiceUnavailableError,
    ValidationError,
)
from ._fanout import Tally, check_callback
from ._keepalive import Keeper, keep_alive
from ._manifest import Manifest, TaskState, process_name
from ._models import ProcessInfo, ProcessResult, ProcessStatus
from ._pacing import Window
from ._process import AsyncBackgroundProcess
from ._task import BatchStats, ProgressCallback, Task, check_retries, check_tasks, start_task

if TYPE_CHECKING:
    from ._client import AsyncHopx
    from ._sandbox import AsyncSandbox

__all__ = ["run_many"]

#: the longest pause before a retry of a failed task, in seconds
MAX_RETRY_DELAY = 10.0


def retry_delay(failures: int) -> float:
    """The pause before re-running a task that failed ``failures`` times: full jitter over
    ``0.2 * 2**(failures - 1)`` seconds, at most ``MAX_RETRY_DELAY``.

    >>> 0 <= retry_delay(1) <= 0.2
    True
    """
    return random.uniform(0.0, min(MAX_RETRY_DELAY, 0.2 * 2 ** max(0, failures - 1)))


def lost_result(process_id: str | None, name: str | None, error: BaseException) -> ProcessResult:
    """The result of a task whose sandbox (or process) disappeared before it was seen to end."""
    return ProcessResult(
        process_id=process_id or "",
        status=ProcessStatus.LOST,
        exit_code=None,
        stdout="",
        stderr=str(error),
        name=name,
        output_available=False,
    )


def open_manifest(manifest: Any, tasks: Sequence[Task]) -> Manifest:
    """The manifest at the path ``manifest`` for ``tasks`` (checked before any request)."""
    if not isinstance(manifest, (str, os.PathLike)) or not os.fspath(manifest):
        raise ValidationError("manifest", f"expected a file path, got {manifest!r}")
    return Manifest.open(manifest, tasks)


class _Run:
    """One run of ``run_many``: its tasks, sandboxes, bookkeeping and window."""

    def __init__(
        self,
        items: list[Task],
        boxes: list[AsyncSandbox],
        log: Manifest,
        *,
        retries: int,
        check: bool,
        keep: bool,
        stats: BatchStats,
        window: Window,
        tally: Tally,
        deadline: float | None,
    ) -> None:
        self.items = items
        self.boxes = boxes
        self.by_id: dict[str, AsyncSandbox | None] = {box.id: box for box in boxes}
        self.client: AsyncHopx = boxes[0].client
        self.log = log
        self.retries = retries
        self.check = check
        self.keep = keep
        self.stats = stats
        self.window = window
        self.tally = tally
        self.deadline = deadline
        self.lost: set[str] = set()
        #: the keep-alive of each sandbox this run holds (its tasks' waits share it; a
        #: ``wait(keep_alive=True)`` outside the run holds the sandbox through its agent's)
        self.keepers: dict[str, Keeper] = {}
        self.clients = list({id(box.client): box.client for box in boxes}.values())
        self.seen = self.throttled_now()

    # --------------------------------------------------------------- throttling
    def throttled_now(self) -> int:
        return sum(sum(client.throttled.values()) for client in self.clients)

    def answered(self) -> None:
        """A start was answered: lower the window if 429/503s were absorbed since, else
        raise it a little."""
        now = self.throttled_now()
        if now > self.seen:
            self.stats.throttled += now - self.seen
            self.seen = now
            self.window.throttled()
        else:
            self.window.succeeded()

    # ---------------------------------------------------------------- sandboxes
    async def box(self, sandbox_id: str | None) -> AsyncSandbox | None:
        """The sandbox ``sandbox_id`` (connected by id when it is not among ``sandboxes=``),
        or None when it is gone."""
        if sandbox_id is None or sandbox_id in self.lost:
            return None
        if sandbox_id not in self.by_id:
            try:
                self.by_id[sandbox_id] = await self.client.sandboxes.connect(sandbox_id)
            except SandboxNotFoundError:
                self.by_id[sandbox_id] = None
                self.lost.add(sandbox_id)
        return self.by_id[sandbox_id]

    def place(self, index: int, attempt: int) -> AsyncSandbox:
        """Where attempt ``attempt`` of task ``index`` runs: round-robin over the sandboxes
        not lost (a retry moves on to the next one)."""
        alive = [box for box in self.boxes if box.id not in self.lost]
        if not alive:
            raise SandboxLostError(
                "every sandbox of the batch is gone", sandbox_id=self.boxes[0].id
            )
        return alive[(index + attempt) % len(alive)]

    async def listing(self, box: AsyncSandbox) -> dict[str, ProcessInfo]:
        """The sandbox's processes by name."""
        try:
            infos = await box.list_processes()
        except SandboxNotFoundError:
            self.lost.add(box.id)
            return {}
        return {info.name: info for info in infos if info.name}

    # ---------------------------------------------------------------- resuming
    async def prepare(self) -> None:
        """Find the starts an earlier run sent without seeing their answer: by name in their
        sandbox's list, again once the request timeout has passed since the intent."""
        states = self.log.states
        pending = [i for i, st in enumerate(states) if st.phase == "intent"]
        wanted = {states[i].sandbox_id for i in pending} | {
            st.sandbox_id for st in states if st.phase == "started"
        }
        await asyncio.gather(*(self.box(sid) for sid in wanted if sid is not None))
        for second in (False, True):
            if not pending:
                return
            if second:
                latest = max(states[i].at for i in pending)
                wait = latest + self.client.timeouts.request - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            ids = {states[i].sandbox_id for i in pending}
            boxes = [box for sid in ids if (box := self.by_id.get(sid or "")) is not None]
            found = dict(
                zip(
                    [box.id for box in boxes],
                    await asyncio.gather(*(self.listing(box) for box in boxes)),
                    strict=True,
                )
            )
            left = []
            for i in pending:
                st = states[i]
                info = found.get(st.sandbox_id or "", {}).get(st.name or "")
                if info is not None:
                    assert st.sandbox_id is not None
                    self.log.started(i, st.attempt, st.sandbox_id, info.process_id)
                elif st.sandbox_id in found:  # its sandbox lives: look again later
                    left.append(i)
            pending = left

    def order(self) -> list[int]:
        """Tasks with a process already (re-attached) first, so they take the window first."""
        states = self.log.states
        running = [i for i, st in enumerate(states) if st.phase == "started"]
        return running + [i for i, st in enumerate(states) if st.phase != "started"]

    # ------------------------------------------------------------------- tasks
    async def one(self, index: int, scope: anyio.CancelScope) -> None:
        st = self.log.states[index]
        if st.finished(self.retries):
            self.stats.from_manifest += 1
            assert st.result is not None
            self.tally.ended(index, st.result)
            return
        attempt = st.attempt + 1 if st.phase == "ended" else st.attempt
        if st.phase == "ended":
            self.stats.retried += 1
        proc: AsyncBackgroundProcess | None = None
        box: AsyncSandbox | None = None
        try:
            while True:
                async with self.window.slot():
                    self.stats.concurrency = self.window.bound
                    if self.tally.failure is not None:
                        return
                    result: ProcessResult | None = None
                    if st.phase == "started" and st.attempt == attempt:
                        box = await self.box(st.sandbox_id)
                        if box is None:
                            result = lost_result(st.process_id, st.name, _gone(st))
                        else:
                            assert st.process_id is not None
                            proc = box.process(st.process_id)
                            self.stats.reattached += 1
                    else:
                        box, proc = await self.start(index, attempt)
                    if result is None:
                        assert proc is not None
                        assert box is not None
                        result = await self.wait(box, proc)
                    self.log.ended(index, attempt, result)
                    proc = None
                if result.ok or st.failures > self.retries:
                    if self.check and not result.ok:
                        raise ProcessFailedError(result)
                    self.tally.ended(index, result)
                    return
                self.stats.retried += 1
                await asyncio.sleep(retry_delay(st.failures))
                attempt += 1
        except Exception as exc:
            self.tally.failed(exc, scope)  # before the slot is freed: nothing else starts
            if proc is not None:
                await _kill_quietly(proc)
        except BaseException:  # cancelled: end what this task started (unless resumable)
            if proc is not None and not self.resumable_stop():
                await _kill_quietly(proc)
            raise

    def resumable_stop(self) -> bool:
        """Whether this cancellation comes from outside (an interrupt) of a run with a
        manifest: its processes are left running, for the next run to re-attach."""
        past = self.deadline is not None and time.monotonic() >= self.deadline
        return self.log.durable and self.tally.failure is None and not past

    async def start(self, index: int, attempt: int) -> tuple[AsyncSandbox, AsyncBackgroundProcess]:
        """Start attempt ``attempt`` of task ``index`` (placed by :meth:`place`): the intent
        recorded first; a 429 (after the transport's own retries) waits and sends again (it
        was refused unprocessed), a 503 too once a named start is not found in the sandbox;
        a sandbox found gone is left for the next one."""
        task = self.items[index]
        name = process_name(task, self.log.id, index, attempt) if self.log.durable else None
        box = self.place(index, attempt)
        self.log.intent(index, attempt, box.id, name or task.name or "")
        refused = 0
        while True:
            try:
                # a start in flight completes, so that its process is known and can be killed
                with anyio.CancelScope(shield=True):
                    proc = await start_task(box, task, name)
                break
            except RateLimitError as exc:
                refused += 1
                await self.refused(refused, exc.retry_after)
            except SandboxNotFoundError:
                self.lost.add(box.id)
                box = self.place(index, attempt)
                self.log.intent(index, attempt, box.id, name or task.name or "")
            except ServiceUnavailableError:
                if name is None:
                    raise
                refused += 1
                await self.refused(refused, None)
                info = (await self.listing(box)).get(name)
                if info is not None:
                    proc = box.process(info.process_id)
                    break
        self.answered()
        self.log.started(index, attempt, box.id, proc.id)
        self.stats.started += 1
        return box, proc

    async def refused(self, times: int, advice: float | None) -> None:
        self.stats.throttled += 1
        self.window.throttled()
        self.stats.lowest_concurrency = min(self.stats.lowest_concurrency, self.window.bound)
        pause = advice if advice is not None else min(30.0, 0.5 * 2 ** (times - 1))
        await asyncio.sleep(max(0.0, pause))

    async def wait(self, box: AsyncSandbox, proc: AsyncBackgroundProcess) -> ProcessResult:
        """The result of ``proc``; a lost sandbox or process gives a ``lost`` result."""
        keeper = self.keepers.setdefault(box.id, Keeper())
        hold = (
            keep_alive(box, keeper, self.deadline, self.extended)
            if self.keep
            else contextlib.nullcontext()
        )
        try:
            async with hold:
                return await proc.wait()
        except SandboxNotFoundError as exc:
            self.lost.add(box.id)
            return lost_result(proc.id, proc.name, exc)
        except ProcessNotFoundError as exc:
            return lost_result(proc.id, proc.name, exc)

    def extended(self) -> None:
        self.stats.keepalives += 1


def _gone(st: TaskState) -> SandboxLostError:
    return SandboxLostError(
        f"sandbox {st.sandbox_id} of process {st.process_id} is gone",
        sandbox_id=st.sandbox_id or "",
        process_id=st.process_id,
    )


async def _kill_quietly(proc: AsyncBackgroundProcess) -> None:
    """Kill a process this run started, even while the run is being cancelled."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(30):
        try:
            await proc.kill()
        except HopxError:
            pass


async def run_many(
    tasks: Iterable[Task],
    *,
    sandboxes: Sequence[AsyncSandbox],
    max_concurrency: int = 8,
    timeout: float | None = None,
    check: bool = False,
    on_progress: ProgressCallback | None = None,
    manifest: str | os.PathLike[str] | None = None,
    retries: int = 0,
    keep_alive: bool = True,
    stats: BatchStats | None = None,
) -> list[ProcessResult]:
    """Run tasks over sandboxes. See :meth:`AsyncHopx.run_many`."""
    items, boxes = check_tasks(tasks, sandboxes, max_concurrency, allow_none=manifest is not None)
    limit = validate.optional_timeout("timeout", timeout)
    check_callback(on_progress)
    retries = check_retries(retries)
    if stats is not None and not isinstance(stats, BatchStats):
        raise ValidationError("stats", f"expected a BatchStats, got {type(stats).__name__}")
    counters = stats if stats is not None else BatchStats()
    log = open_manifest(manifest, items) if manifest is not None else Manifest.memory(len(items))
    if not boxes:
        unfinished = sum(not state.finished(retries) for state in log.states)
        log.close()
        if unfinished:
            raise ValidationError(
                "sandboxes",
                f"expected at least one sandbox ({unfinished} tasks of the manifest to run)",
            )
        done = [state.result for state in log.states if state.result is not None]
        counters.from_manifest = len(done)
        for count, result in enumerate(done, 1):
            if on_progress is not None:
                on_progress(count, len(done), result)
        return done
    bound = min(max_concurrency, max(len(items), 1))
    counters.concurrency = counters.lowest_concurrency = bound

    def moved(size: int) -> None:
        counters.concurrency = size
        counters.lowest_concurrency = min(counters.lowest_concurrency, size)

    started = time.monotonic()
    run = _Run(
        items,
        boxes,
        log,
        retries=retries,
        check=check,
        keep=bool(keep_alive),
        stats=counters,
        window=Window(bound, on_change=moved),
        tally=Tally(
            len(items),
            on_progress,
            unfinished="{left} tasks not finished after {limit:g}s (the started ones were killed)",
        ),
        deadline=None if limit is None else started + limit,
    )
    try:
        if log.resumed:
            with anyio.move_on_after(limit):
                await run.prepare()
        left = None if limit is None else max(0.0, limit - (time.monotonic() - started))
        return await run.tally.run(left, run.one, run.order())
    finally:
        log.close()
