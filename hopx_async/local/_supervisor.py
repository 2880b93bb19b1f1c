"""Running local processes: one session and process group each, output straight to files.

The supervisor knows nothing about sandboxes or HTTP. It starts a process with its
stdout/stderr opened on files (the child writes to disk, the server never buffers output),
waits for it under a deadline, and ends whole process groups: SIGTERM (plus SIGCONT, so a
paused group can act on it), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = [
    "GRACE_SECONDS",
    "Running",
    "Supervisor",
    "exit_code_of",
    "group_alive",
    "proc_start_ticks",
    "signal_group",
]

#: Seconds between SIGTERM and SIGKILL when a process group is ended.
GRACE_SECONDS = 1.0


@attrs.define(eq=False)
class Running:
    """One started process (the leader of its own process group)."""

    proc: asyncio.subprocess.Process
    pid: int
    start_ticks: str | None
    #: Why the server is ending it: "killed", "timeout" or None (ran to its end).
    end_reason: str | None = None
    killer: asyncio.Task[None] | None = None
    #: Set by the owner once the record of this process is final.
    done: asyncio.Event = attrs.Factory(asyncio.Event)


def proc_start_ticks(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (None if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 of proc(5) (state); starttime is field 22.
    return fields[19] if len(fields) > 19 else None


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a member that is not a zombie.

    Orphaned members whose new parent is slow to reap them (PID 1 in many containers)
    stay zombies in the group; they must not count as running.
    """
    if not signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: a death by signal N becomes 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


@contextlib.contextmanager
def _opened(stdin: Path | None, stdout: Path, stderr: Path) -> Iterator[tuple[int, int, int]]:
    fds: list[int] = []
    try:
        if stdin is None:
            fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        else:
            fds.append(os.open(stdin, os.O_RDONLY | os.O_CLOEXEC))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fds.append(os.open(stdout, flags, 0o644))
        fds.append(os.open(stderr, flags, 0o644))
        yield fds[0], fds[1], fds[2]
    finally:
        for fd in fds:
            os.close(fd)


class Supervisor:
    """Starts, watches and ends process groups."""

    def __init__(self, grace_seconds: float = GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds

    async def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        stdin: Path | None = None,
    ) -> Running:
        """Start ``argv``; raises ``OSError`` when it cannot start."""
        with _opened(stdin, stdout, stderr) as (fd_in, fd_out, fd_err):
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=fd_in,
                stdout=fd_out,
                stderr=fd_err,
                cwd=str(cwd),
                env=env,
                start_new_session=True,
            )
        return Running(proc=proc, pid=proc.pid, start_ticks=proc_start_ticks(proc.pid))

    async def watch(self, run: Running, timeout: float) -> int:
        """Wait for the leader to exit, ending the group at ``timeout``; return its returncode."""
        try:
            await asyncio.wait_for(run.proc.wait(), timeout)
        except asyncio.TimeoutError:
            if run.end_reason is None:
                run.end_reason = "timeout"
            self.terminate_soon(run)
        returncode = await run.proc.wait()
        if run.killer is not None:
            await run.killer
        return returncode

    def terminate_soon(self, run: Running) -> None:
        """Start ending the whole group of ``run`` (once)."""
        if run.killer is None:
            run.killer = asyncio.ensure_future(self._end_group(run))

    async def _end_group(self, run: Running) -> None:
        pgid = run.pid
        signal_group(pgid, signal.SIGTERM)
        signal_group(pgid, signal.SIGCONT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        while loop.time() < deadline:
            if run.proc.returncode is not None and not group_alive(pgid):
                return
            await asyncio.sleep(0.05)
        signal_group(pgid, signal.SIGKILL)
