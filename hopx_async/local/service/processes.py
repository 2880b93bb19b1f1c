"""The lifecycle of every sandbox's background processes: load, start (durably,
idempotently), follow, pause, kill, delete. Waiting for their changes is ``changes``;
runs tied to one request are ``foreground``.

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
from typing import Any

from ..errors import ApiError, process_not_found
from ..runtime.launch import PROCESS_TAG_ENV, Launcher, StartSpec
from ..runtime.procfs import all_stats, command_line, descendants, owner, pids_by_env, read_stat
from ..runtime.supervisor import Running, Supervisor, exit_code_of
from ..runtime.tasks import to_the_end
from ..state.layout import Layout
from ..state.records import ProcessRecord, SandboxRecord, new_id
from ..state.store import Store
from .changes import ChangeFeed
from .foreground import ForegroundRuns
from .render import Renderer, seconds

__all__ = ["KILL_ANSWER_WAIT", "Processes"]

#: Seconds a kill's answer waits, at most, for the process to end (the kill goes on after).
KILL_ANSWER_WAIT = 5.0

logger = logging.getLogger("hopx_async.local")


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
        foreground: ForegroundRuns,
    ) -> None:
        self.layout = layout
        self.store = store
        self.launcher = launcher
        self.supervisor = supervisor
        self.renderer = renderer
        #: sandbox id -> process id -> record; a sandbox is absent once deleted.
        self.procs: dict[str, dict[str, ProcessRecord]] = {}
        self.runs: dict[str, Running] = {}
        self.foreground = foreground
        #: the change feed of these records (it reads the same dicts)
        self.changes = ChangeFeed(self.procs, self.runs, layout)
        self._spawning: dict[str, asyncio.Future[None]] = {}
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
        self.foreground.end_all()
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
        runs.extend(self.foreground.of_sandbox(sandbox_id))
        return runs

    async def end_sandbox(self, sandbox_id: str) -> None:
        """Kill every tree of a sandbox being deleted, then forget its processes."""
        self._ending.add(sandbox_id)
        try:
            runs = self._runs_of(sandbox_id)
            for run in runs:
                if run.end_reason is None:
                    run.end_reason = "killed"
            # The box, daemons and all, ends from the host at once (SIGKILL of its pid 1).
            self.launcher.end_box(sandbox_id)
            for run in runs:
                self.supervisor.terminate_soon(run)
            await _all_done(runs, timeout=5)
        finally:
            self._ending.discard(sandbox_id)
        for process_id in self.procs.pop(sandbox_id, {}):
            self.renderer.forget(process_id)
        self.foreground.forget(sandbox_id)
        for key in [k for k in self._idempotent if k[0] == sandbox_id]:
            del self._idempotent[key]
        self.changes.forget(sandbox_id)

    def pause_sandbox(self, sandbox_id: str) -> None:
        for run in self._runs_of(sandbox_id):
            self.supervisor.pause(run)
        self.launcher.freeze_box(sandbox_id)  # daemons too

    def resume_sandbox(self, sandbox_id: str) -> None:
        self.launcher.thaw_box(sandbox_id)
        for run in self._runs_of(sandbox_id):
            self.supervisor.resume(run)

    def os_processes(self, sandbox_id: str) -> list[dict[str, Any]]:
        """The OS view: every live process of the sandbox's running trees (boxes excluded)."""
        in_box = self.launcher.box_members(sandbox_id)
        if in_box is not None:  # everything in the sandbox's box but its supervisor
            return [
                {"pid": s.pid, "command": command_line(s), "user": owner(s.pid), "ppid": s.ppid}
                for s in in_box
            ]
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
        rec.pid = run.pid or None  # 0: it ended before its host pid could be read
        rec.pid_start = run.start_ticks
        self.runs[rec.process_id] = run
        # The pid is committed with the loop's next batch of writes: until then a restart
        # finds the tree by the box dying with the server, or by its tag in the environment.
        self._bump(sbx, rec)
        if sbx.id not in self.procs or sbx.id in self._ending:
            # The sandbox went away while this process was being started (its box with it).
            run.end_reason = "killed"
            self.launcher.end_box(sbx.id)
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
            elif returncode == -9 and self.launcher.oom_killed(sbx.id):
                rec.status = "failed"
                limit = self.launcher.boxes.limits.memory_mb
                rec.error = (
                    f"killed by the out-of-memory killer: the sandbox's memory limit is {limit} MiB"
                )
                self._note(rec, "stderr", f"hopx-local: {rec.error}")
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
        self.store.put_process(rec)
        self.store.put_sandbox(sbx)
        self.changes.changed(sbx.id, sbx.version, terminal=rec.finished)

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
        # The answer shows the end when it comes soon (SIGTERM obeyed, or SIGKILL after a
        # short grace period); otherwise the kill goes on and the record still says running.
        wait = min(self.supervisor.grace_seconds + 1.0, KILL_ANSWER_WAIT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.done.wait()), wait)
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


async def _all_done(runs: list[Running], *, timeout: float) -> None:
    """Wait until every run's record is final (or ``timeout``); leave no waiter behind."""
    if not runs:
        return
    waiters = [asyncio.ensure_future(run.done.wait()) for run in runs]
    _, pending = await asyncio.wait(waiters, timeout=timeout)
    for waiter in pending:
        waiter.cancel()
