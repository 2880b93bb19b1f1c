"""Foreground runs: a synchronous execution (``run_sync``) and a run attached to one
connection (``attached``, for streamed executions). Neither is listed nor kept: output goes to
scratch files removed at the end, and the process group ends with its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from ..errors import ApiError
from ..runtime.launch import Launcher, StartSpec
from ..runtime.output import read_tail
from ..runtime.supervisor import Running, Supervisor, exit_code_of
from ..runtime.tasks import to_the_end
from ..state.layout import Layout
from ..state.records import SandboxRecord, new_id
from .render import seconds

__all__ = ["SYNC_OUTPUT_CAP", "TIMEOUT_EXIT_CODE", "AttachedRun", "ForegroundRuns"]

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


class ForegroundRuns:
    """The runs that belong to one request, per sandbox (to pause, resume and end them)."""

    def __init__(self, *, layout: Layout, launcher: Launcher, supervisor: Supervisor) -> None:
        self.layout = layout
        self.launcher = launcher
        self.supervisor = supervisor
        #: sandbox id -> its foreground runs still going
        self.runs: dict[str, set[Running]] = {}

    def of_sandbox(self, sandbox_id: str) -> list[Running]:
        return list(self.runs.get(sandbox_id, ()))

    def end_all(self) -> None:
        """End every foreground run (the server is stopping)."""
        for runs in self.runs.values():
            for run in runs:
                run.end_reason = run.end_reason or "shutdown"
                self.supervisor.terminate_soon(run)

    def forget(self, sandbox_id: str) -> None:
        self.runs.pop(sandbox_id, None)

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
            runs = self.runs.setdefault(sbx.id, set())
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
            runs = self.runs.setdefault(sbx.id, set())
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
