"""Processes of every sandbox: starting (durably, idempotently), following, killing, waiting.

A background start is crash-safe: its record, with its idempotency key, is committed as
``queued`` (one group commit for the starts of one loop iteration) before the child can run
and before the start is answered; its pid is committed with the next batch of writes. After a
crash every unfinished record is marked ``failed`` at load, and its process tree (which died
with the server when boxed) is killed if still there, so nothing runs untracked and nothing
runs twice for one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from ..errors import ApiError, process_not_found
from ..runtime.launch import PROCESS_TAG_ENV, Launcher, StartSpec
from ..runtime.output import file_size, read_tail
from ..runtime.procfs import all_stats, command_line, descendants, owner, pids_by_env, read_stat
from ..runtime.supervisor import Running, Supervisor, exit_code_of
from ..runtime.tasks import to_the_end
from ..state.layout import Layout
from ..state.records import ProcessRecord, SandboxRecord, new_id
from ..state.store import Store
from .render import Renderer, seconds

__all__ = ["SYNC_OUTPUT_CAP", "TIMEOUT_EXIT_CODE", "AttachedRun", "Processes"]

logger = logging.getLogger("hopx_async.local")

#: Per stream, a synchronous execution answers at most this many trailing bytes.
SYNC_OUTPUT_CAP = 8 * 1024 * 1024
#: The exit code of a synchronous run ended by its timeout (as timeout(1) answers).
TIMEOUT_EXIT_CODE = 124


@attrs.frozen
class AttachedRun:
    """A process tied to one connection (a streamed execution): not listed, not kept."""

    run: Running
    stdout: Path
    stderr: Path
    #: The leader's return code, once it has exited (or been ended at its timeout).
    ended: asyncio.Future[int]
    #: ``time.monotonic()`` when it was launched.
    started: float


#: a terminal-only long poll, once woken, answers when this long passed since the latest ending
#: of the batch without another one...
_LINGER_QUIET = 0.004
#: ... and this long in all, at most
_LINGER_MAX = 0.02


class Processes:
    """Records and running trees of every sandbox's processes."""

    def __init__(
        self,
        *,
        layout: Layout,
        store: Store,
        launcher: Launcher,
        supervisor: Supervisor,
        renderer: Renderer,
    ) -> None:
        self.layout = layout
        self.store = store
        self.launcher = launcher
        self.supervisor = supervisor
        self.renderer = renderer
        #: sandbox id -> process id -> record; a sandbox is absent once deleted.
        self.procs: dict[str, dict[str, ProcessRecord]] = {}
        self.runs: dict[str, Running] = {}
        self._sync_runs: dict[str, set[Running]] = {}
        self._spawning: dict[str, asyncio.Future[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        #: per sandbox, the counter at its latest terminal change (found from the records
        #: on first use)
        self._ended_at: dict[str, int] = {}
        #: per sandbox, when (``time.monotonic()``) its latest terminal change was made
        self._ended_when: dict[str, float] = {}
        self._idempotent: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._followers: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[dict[str, Any]]] = set()
        self._seq = 0
        self._ending: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def add_sandbox(self, sandbox_id: str) -> None:
        self.procs.setdefault(sandbox_id, {})

    def load(self, sandboxes: dict[str, SandboxRecord]) -> None:
        """Read the records; those that were unfinished when the server died become failed."""
        for sandbox_id in sandboxes:
            self.add_sandbox(sandbox_id)
        now = time.time()
        loop = asyncio.get_running_loop()
        records = self.store.processes()
        unfinished = {rec.process_id for rec in records if not rec.finished}
        tagged = pids_by_env(PROCESS_TAG_ENV, unfinished)
        for rec in records:
            procs = self.procs.get(rec.sandbox_id)
            if procs is None:
                continue
            procs[rec.process_id] = rec
            self._seq = max(self._seq, rec.seq)
            if rec.idempotency_key:
                done: asyncio.Future[dict[str, Any]] = loop.create_future()
                done.set_result(self.renderer.start_answer(rec, status="running"))
                self._idempotent[(rec.sandbox_id, rec.idempotency_key)] = done
            if rec.finished:
                continue
            self._kill_orphan(rec, tagged.get(rec.process_id, []))
            rec.status = "failed"
            rec.completed_at = now
            rec.error = (
                "the local backend stopped while this process was "
                f"{'running' if rec.pid else 'starting'}; its outcome is unknown"
            )
            self._note(rec, "stderr", f"hopx-local: {rec.error}")
            self._bump(sandboxes[rec.sandbox_id], rec)
        self.store.flush()

    @staticmethod
    def _kill_orphan(rec: ProcessRecord, tagged: list[int]) -> None:
        # Its tree may still run (without a box it had its own session and outlived the
        # server). ``tagged`` are the processes carrying its id in their environment; the
        # recorded pid is only touched if it still belongs to the same process (same start
        # time), never a recycled pid.
        stats = all_stats()
        roots = set(tagged)
        leader = read_stat(rec.pid) if rec.pid else None
        if leader is not None and leader.start_ticks == rec.pid_start:
            roots.add(leader.pid)
        if not roots:
            return
        doomed = {s.pid for s in descendants(roots, stats)}
        doomed.update(s.pid for s in stats if s.pgid in roots)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)

    async def close(self) -> None:
        """End every running tree (marking them killed)."""
        runs = list(self.runs.values())
        for run in runs:
            if run.end_reason is None:
                run.end_reason = "shutdown"
            self.supervisor.terminate_soon(run)
        for sync_runs in self._sync_runs.values():
            for run in sync_runs:
                run.end_reason = run.end_reason or "shutdown"
                self.supervisor.terminate_soon(run)
        if self._starting:
            await asyncio.wait(list(self._starting), timeout=10)
            runs = list(self.runs.values())
            for run in runs:
                run.end_reason = run.end_reason or "shutdown"
                self.supervisor.terminate_soon(run)
        await _all_done(runs, timeout=10)
        if self._followers:
            await asyncio.wait(list(self._followers), timeout=5)

    # -- per sandbox ---------------------------------------------------------------------

    def _runs_of(self, sandbox_id: str) -> list[Running]:
        procs = self.procs.get(sandbox_id, {})
        runs = [run for pid, run in self.runs.items() if pid in procs]
        runs.extend(self._sync_runs.get(sandbox_id, ()))
        return runs

    async def end_sandbox(self, sandbox_id: str) -> None:
        """Kill every tree of a sandbox being deleted, then forget its processes."""
        self._ending.add(sandbox_id)
        try:
            runs = self._runs_of(sandbox_id)
            for run in runs:
                if run.end_reason is None:
                    run.end_reason = "killed"
                self.supervisor.terminate_soon(run)
            await _all_done(runs, timeout=5)
        finally:
            self._ending.discard(sandbox_id)
        for process_id in self.procs.pop(sandbox_id, {}):
            self.renderer.forget(process_id)
        self._sync_runs.pop(sandbox_id, None)
        self._ended_at.pop(sandbox_id, None)
        self._ended_when.pop(sandbox_id, None)
        for key in [k for k in self._idempotent if k[0] == sandbox_id]:
            del self._idempotent[key]
        self._wake(sandbox_id)

    def pause_sandbox(self, sandbox_id: str) -> None:
        for run in self._runs_of(sandbox_id):
            self.supervisor.pause(run)

    def resume_sandbox(self, sandbox_id: str) -> None:
        for run in self._runs_of(sandbox_id):
            self.supervisor.resume(run)

    def os_processes(self, sandbox_id: str) -> list[dict[str, Any]]:
        """The OS view: every live process of the sandbox's running trees (boxes excluded)."""
        runs = self._runs_of(sandbox_id)
        if not runs:
            return []
        stats = all_stats()
        carriers: set[int] = set()
        roots = set()
        for run in runs:
            roots.add(run.pid)
            if run.carriers:
                carriers.add(run.pid)
                if run.carriers > 1:
                    carriers.update(s.pid for s in stats if s.ppid == run.pid)
        sessions = {run.pid for run in runs}
        tree = {s.pid: s for s in descendants(roots, stats)}
        tree.update({s.pid: s for s in stats if s.session in sessions})
        return [
            {"pid": s.pid, "command": command_line(s), "user": owner(s.pid), "ppid": s.ppid}
            for s in tree.values()
            if s.pid not in carriers and not s.zombie
        ]

    # -- starting ------------------------------------------------------------------------

    async def start(
        self, sbx: SandboxRecord, spec: StartSpec, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Start a background process; answer the documented start body.

        The start runs as a task of its own, shielded: a client that goes away mid-start
        leaves a tracked process (and its key) behind, never an untracked or half-made one.
        """
        if idempotency_key is None:
            return dict(await to_the_end(self._start_task(sbx, spec, None)))
        key = (sbx.id, idempotency_key)
        existing = self._idempotent.get(key)
        if existing is not None:
            return dict(await to_the_end(existing))
        task = self._idempotent[key] = self._start_task(sbx, spec, idempotency_key)

        def forget_failed(done: asyncio.Future[dict[str, Any]]) -> None:
            if (done.cancelled() or done.exception() is not None) and self._idempotent.get(
                key
            ) is done:
                del self._idempotent[key]

        task.add_done_callback(forget_failed)
        return dict(await to_the_end(task))

    def _start_task(
        self, sbx: SandboxRecord, spec: StartSpec, idempotency_key: str | None
    ) -> asyncio.Task[dict[str, Any]]:
        task = asyncio.ensure_future(self._start(sbx, spec, idempotency_key))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return task

    async def _start(
        self, sbx: SandboxRecord, spec: StartSpec, idempotency_key: str | None
    ) -> dict[str, Any]:
        workdir = self.launcher.resolve_working_dir(sbx.id, spec.working_dir)
        env = self.launcher.process_env(sbx.id, sbx.env_vars, spec.env)
        self._seq += 1
        rec = ProcessRecord(
            process_id=new_id("proc"),
            execution_id=new_id("exec"),
            sandbox_id=sbx.id,
            seq=self._seq,
            kind=spec.kind,
            language=spec.language,
            timeout=spec.timeout,
            created_at=time.time(),
            name=spec.name,
            command=spec.command,
            idempotency_key=idempotency_key,
        )
        self.procs[sbx.id][rec.process_id] = rec
        self._bump(sbx, rec)
        # Durable before the child can run: a crash from here on leaves a record (and the
        # idempotency key) behind, so the process is known at restart and never run twice.
        # Concurrent starts share one commit.
        await self.store.commit()
        spawned: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawning[rec.process_id] = spawned
        try:
            try:
                run = await self.launcher.launch(
                    sbx.id,
                    rec.process_id,
                    spec,
                    workdir=workdir,
                    env=env,
                    internet=sbx.internet_access,
                )
            except (OSError, ValueError) as exc:  # ValueError: a NUL in argv or env
                self._could_not_start(sbx, rec, exc)
            else:
                self._started(sbx, rec, run)
        finally:
            del self._spawning[rec.process_id]
            spawned.set_result(None)
        return self.renderer.start_answer(rec)

    def _could_not_start(
        self, sbx: SandboxRecord, rec: ProcessRecord, exc: OSError | ValueError
    ) -> None:
        now = time.time()
        rec.status = "failed"
        rec.started_at = rec.completed_at = now
        rec.duration = 0.0
        rec.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
        rec.error = f"could not start: {exc}"
        self._note(rec, "stderr", f"hopx-local: {rec.error}")
        self._bump(sbx, rec)

    def _started(self, sbx: SandboxRecord, rec: ProcessRecord, run: Running) -> None:
        rec.status = "running"
        rec.started_at = time.time()
        rec.pid = run.pid
        rec.pid_start = run.start_ticks
        self.runs[rec.process_id] = run
        # The pid is committed with the loop's next batch of writes: until then a restart
        # finds the tree by the box dying with the server, or by its tag in the environment.
        self._bump(sbx, rec)
        if sbx.id not in self.procs or sbx.id in self._ending:
            # The sandbox went away while this process was being started.
            run.end_reason = "killed"
            self.supervisor.terminate_soon(run)
        elif sbx.status == "paused":  # paused while it was being started
            self.supervisor.pause(run)
        task = asyncio.ensure_future(self._follow(sbx, rec, run, time.monotonic()))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(
        self, sbx: SandboxRecord, rec: ProcessRecord, run: Running, started: float
    ) -> None:
        try:
            returncode = await self.supervisor.watch(run, rec.timeout)
            rec.exit_code = exit_code_of(returncode)
            rec.completed_at = time.time()
            rec.duration = time.monotonic() - started
            reason = run.end_reason
            if reason == "timeout":
                rec.status = "timeout"
                rec.error = f"timed out after {seconds(rec.timeout)}"
                self._note(
                    rec,
                    "stderr",
                    f"hopx-local: process timed out after {seconds(rec.timeout)};"
                    " its process group was killed",
                )
            elif reason == "shutdown":
                rec.status = "killed"
                rec.error = "killed because the local backend shut down"
                self._note(rec, "stderr", f"hopx-local: {rec.error}")
            elif reason == "killed":
                rec.status = "killed"
            else:
                rec.status = "completed" if returncode == 0 else "failed"
            self._bump(sbx, rec)
        finally:
            self.runs.pop(rec.process_id, None)
            run.done.set()

    def _note(self, rec: ProcessRecord, stream: str, line: str) -> None:
        """Append a line of the server's own to a process's output file."""
        path = self.layout.output(rec.sandbox_id, rec.process_id, stream)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            with open(fd, "ab") as f:
                if f.tell() > 0:
                    with open(path, "rb") as r:
                        r.seek(-1, os.SEEK_END)
                        if r.read(1) != b"\n":
                            f.write(b"\n")
                f.write(line.encode() + b"\n")
        except OSError:
            logger.warning("could not write to %s", path)

    def _bump(self, sbx: SandboxRecord, rec: ProcessRecord) -> None:
        if sbx.id not in self.procs:  # deleted meanwhile: never write it back
            return
        sbx.version += 1
        rec.version = sbx.version
        if rec.finished:
            self._ended_at[sbx.id] = sbx.version
            self._ended_when[sbx.id] = time.monotonic()
        self.store.put_process(rec)
        self.store.put_sandbox(sbx)
        self._wake(sbx.id)

    def _wake(self, sandbox_id: str) -> None:
        event = self._changed.pop(sandbox_id, None)
        if event is not None:
            event.set()

    # -- reading, killing, deleting --------------------------------------------------------

    def of_sandbox(self, sandbox_id: str) -> list[ProcessRecord]:
        return list(self.procs.get(sandbox_id, {}).values())

    def get(self, sandbox_id: str, process_id: str) -> ProcessRecord:
        rec = self.procs.get(sandbox_id, {}).get(process_id)
        if rec is None:
            raise process_not_found(process_id)
        return rec

    async def kill(self, sandbox_id: str, process_id: str) -> ProcessRecord:
        rec = self.get(sandbox_id, process_id)
        spawning = self._spawning.get(process_id)
        if spawning is not None:
            await asyncio.shield(spawning)
        run = self.runs.get(process_id)
        if rec.finished or run is None:
            raise process_not_found(process_id, ended=True)
        if run.end_reason is None:
            run.end_reason = "killed"
        self.supervisor.terminate_soon(run)
        await asyncio.wait_for(asyncio.shield(run.done.wait()), 10)
        return rec

    def delete(self, sandbox_id: str, process_id: str) -> None:
        rec = self.get(sandbox_id, process_id)
        if not rec.finished:
            raise ApiError(
                409,
                "CONFLICT",
                f"process {process_id!r} is {rec.status}; kill it before deleting it",
            )
        del self.procs[sandbox_id][process_id]
        self.store.delete_process(process_id)
        self.renderer.forget(process_id)
        for path in self.layout.output_dir(sandbox_id).glob(f"{process_id}.*"):
            with contextlib.suppress(OSError):
                path.unlink()

    async def wait_for_change(
        self, sbx: SandboxRecord, since: int, wait: float, *, terminal: bool = False
    ) -> None:
        """Return once the sandbox's counter exceeds ``since``, or after ``wait`` seconds.

        ``terminal=True``: once a process of the sandbox reached a terminal state after
        ``since`` (other changes do not count). It answers when no process ended for
        ``_LINGER_QUIET`` (counted from the latest ending, not from the moment this coroutine
        resumes: a busy loop has gathered what ended meanwhile) or none still runs, so that
        a batch ending together makes one answer, also when its first endings were already
        there on arrival; ``_LINGER_MAX`` at most. Starts streaming in do not hold it back.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while sbx.id in self.procs and not self._changed_since(sbx, since, terminal):
            if not await self._next_change(sbx.id, deadline - loop.time()):
                return
        if not terminal:
            return
        linger_end = min(deadline, loop.time() + _LINGER_MAX)
        while sbx.id in self.procs:
            quiet = self._ended_when.get(sbx.id, 0.0) + _LINGER_QUIET - time.monotonic()
            if quiet <= 0 or all(rec.finished for rec in self.procs[sbx.id].values()):
                return
            if not await self._next_change(sbx.id, min(quiet, linger_end - loop.time())):
                return

    def _changed_since(self, sbx: SandboxRecord, since: int, terminal: bool) -> bool:
        if not terminal:
            return sbx.version > since
        ended = self._ended_at.get(sbx.id)
        if ended is None:
            records = self.procs.get(sbx.id, {}).values()
            ended = max((rec.version for rec in records if rec.finished), default=0)
            self._ended_at[sbx.id] = ended
        return ended > since

    async def _next_change(self, sandbox_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the next change of the sandbox; whether one came."""
        if timeout <= 0:
            return False
        event = self._changed.setdefault(sandbox_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def wait_for_process(
        self, rec: ProcessRecord, wait: float, offsets: tuple[int, int] | None
    ) -> None:
        """Return when ``rec`` ended, has output past ``offsets``, or ``wait`` elapsed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out = self.layout.output(rec.sandbox_id, rec.process_id, "stdout")
        err = self.layout.output(rec.sandbox_id, rec.process_id, "stderr")
        while not rec.finished:
            if offsets is not None and (file_size(out) > offsets[0] or file_size(err) > offsets[1]):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            run = self.runs.get(rec.process_id)
            step = remaining if offsets is None else min(remaining, 0.05)
            if run is None:
                await asyncio.sleep(min(step, 0.05))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.done.wait()), step)

    # -- synchronous execution -------------------------------------------------------------

    def _end_unwanted_launch(self, run: Running) -> None:
        """A synchronous run whose client went away while it was starting: end it now."""
        run.end_reason = "killed"
        self.supervisor.terminate_soon(run)

    async def run_sync(self, sbx: SandboxRecord, spec: StartSpec) -> dict[str, Any]:
        """Run to the end (or the timeout) and answer stdout/stderr/exit_code."""
        workdir = self.launcher.resolve_working_dir(sbx.id, spec.working_dir)
        env = self.launcher.process_env(sbx.id, sbx.env_vars, spec.env)
        scratch = new_id("sync")
        stdout = self.layout.output(sbx.id, scratch, "stdout")
        stderr = self.layout.output(sbx.id, scratch, "stderr")
        started = time.monotonic()
        try:
            launching = self.launcher.launch(
                sbx.id, scratch, spec, workdir=workdir, env=env, internet=sbx.internet_access
            )
            try:
                run = await to_the_end(launching, on_abandoned=self._end_unwanted_launch)
            except (OSError, ValueError) as exc:
                return {
                    "success": False,
                    "stdout": "",
                    "stderr": f"hopx-local: could not start: {exc}\n",
                    "exit_code": 127 if isinstance(exc, FileNotFoundError) else 126,
                    "execution_time": 0.0,
                }
            runs = self._sync_runs.setdefault(sbx.id, set())
            runs.add(run)
            try:
                returncode = await self.supervisor.watch(run, spec.timeout)
            except BaseException:
                run.end_reason = run.end_reason or "killed"
                self.supervisor.terminate_soon(run)
                raise
            finally:
                runs.discard(run)
                run.done.set()
            out, out_cut, _ = read_tail(stdout, SYNC_OUTPUT_CAP)
            err, err_cut, _ = read_tail(stderr, SYNC_OUTPUT_CAP)
            result: dict[str, Any] = {
                "success": returncode == 0 and run.end_reason is None,
                "stdout": out,
                "stderr": err,
                "exit_code": exit_code_of(returncode),
                "execution_time": round(time.monotonic() - started, 4),
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
            }
            if run.end_reason == "timeout":
                # As the service does: 200 with success false, the output so far, a non-zero
                # exit code (124, as timeout(1) uses) and a closing line on stderr.
                note = f"hopx-local: execution timed out after {seconds(spec.timeout)}"
                sep = "" if not err or err.endswith("\n") else "\n"
                result.update(
                    success=False,
                    exit_code=TIMEOUT_EXIT_CODE,
                    stderr=f"{err}{sep}{note}; its process group was killed\n",
                    timed_out=True,
                )
                return result
            if run.end_reason is not None:
                raise ApiError(
                    409, "CONFLICT", "execution was killed (sandbox deleted or server stopping)"
                )
            return result
        finally:
            for path in self.layout.output_dir(sbx.id).glob(f"{scratch}.*"):
                with contextlib.suppress(OSError):
                    path.unlink()

    @contextlib.asynccontextmanager
    async def attached(self, sbx: SandboxRecord, spec: StartSpec) -> AsyncIterator[AttachedRun]:
        """Launch ``spec`` for the caller alone, like a synchronous execution.

        Its output goes to scratch files the caller reads at its own pace. Leaving the
        block ends the process group if it still runs and removes the files. Raises
        ``OSError``/``ValueError`` when the process cannot start.
        """
        workdir = self.launcher.resolve_working_dir(sbx.id, spec.working_dir)
        env = self.launcher.process_env(sbx.id, sbx.env_vars, spec.env)
        scratch = new_id("stream")
        started = time.monotonic()
        try:
            launching = self.launcher.launch(
                sbx.id, scratch, spec, workdir=workdir, env=env, internet=sbx.internet_access
            )
            run = await to_the_end(launching, on_abandoned=self._end_unwanted_launch)
            runs = self._sync_runs.setdefault(sbx.id, set())
            runs.add(run)
            ended = asyncio.ensure_future(self.supervisor.watch(run, spec.timeout))
            try:
                yield AttachedRun(
                    run=run,
                    stdout=self.layout.output(sbx.id, scratch, "stdout"),
                    stderr=self.layout.output(sbx.id, scratch, "stderr"),
                    ended=ended,
                    started=started,
                )
            finally:
                if not ended.done():
                    run.end_reason = run.end_reason or "killed"
                    self.supervisor.terminate_soon(run)
                    with contextlib.suppress(Exception):
                        await asyncio.shield(ended)
                runs.discard(run)
                run.done.set()
        finally:
            for path in self.layout.output_dir(sbx.id).glob(f"{scratch}.*"):
                with contextlib.suppress(OSError):
                    path.unlink()


async def _all_done(runs: list[Running], *, timeout: float) -> None:
    """Wait until every run's record is final (or ``timeout``); leave no waiter behind."""
    if not runs:
        return
    waiters = [asyncio.ensure_future(run.done.wait()) for run in runs]
    _, pending = await asyncio.wait(waiters, timeout=timeout)
    for waiter in pending:
        waiter.cancel()
