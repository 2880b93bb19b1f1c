"""Running local processes: each leads its own session, output goes straight to files.

The supervisor knows nothing about sandboxes, boxes or HTTP. It starts an argv with its
stdout/stderr opened on files (the child writes to disk, the server never buffers output),
waits for it under a deadline that does not count paused time, and ends the whole tree below
it: SIGTERM (plus SIGCONT, so a paused tree can act on it), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from ._procfs import ProcStat, all_stats, descendants, read_stat

__all__ = ["GRACE_SECONDS", "Running", "SpawnArgs", "Supervisor", "exit_code_of"]

#: Seconds between SIGTERM and SIGKILL when a process tree is ended.
GRACE_SECONDS = 1.0


@attrs.define(eq=False)
class Running:
    """One started process (the leader of its own session and process group)."""

    proc: asyncio.subprocess.Process
    pid: int
    start_ticks: str | None
    #: Pids that only carry the box (its outer and inner ``bwrap``): never sent SIGTERM.
    carriers: int = 0
    #: Why the server is ending it: "killed", "timeout", "shutdown" or None (ran to its end).
    end_reason: str | None = None
    killer: asyncio.Task[None] | None = None
    #: Set by the owner once the record of this process is final.
    done: asyncio.Event = attrs.Factory(asyncio.Event)
    #: Loop time at which it was paused (None while it runs), and the paused seconds so far.
    paused_since: float | None = None
    paused_total: float = 0.0
    changed: asyncio.Event = attrs.Factory(asyncio.Event)

    def active_seconds(self, now: float, started: float) -> float:
        """Seconds it has been running (not paused) since ``started``."""
        paused = self.paused_total
        if self.paused_since is not None:
            paused += now - self.paused_since
        return now - started - paused


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: a death by signal N becomes 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _members(run: Running) -> list[ProcStat]:
    """The leader, everything below it, and whatever is left in its process group."""
    stats = all_stats()
    tree = {s.pid: s for s in descendants({run.pid}, stats)}
    for stat in stats:
        if stat.pgid == run.pid and stat.pid not in tree:
            tree[stat.pid] = stat
    return [s for s in tree.values() if not s.zombie]


def _alive(stat: ProcStat) -> bool:
    now = read_stat(stat.pid)
    return now is not None and now.start_ticks == stat.start_ticks and not now.zombie


@contextlib.contextmanager
def _opened(stdin: Path | None, stdout: Path, stderr: Path) -> Iterator[tuple[int, int, int]]:
    fds: list[int] = []
    try:
        if stdin is None:
            fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        else:
            fds.append(os.open(stdin, os.O_RDONLY | os.O_CLOEXEC))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fds.append(os.open(stdout, flags, 0o600))
        fds.append(os.open(stderr, flags, 0o600))
        yield fds[0], fds[1], fds[2]
    finally:
        for fd in fds:
            os.close(fd)


@attrs.frozen
class SpawnArgs:
    """How to start one argv: where, with what environment, and what the child may keep."""

    argv: Sequence[str]
    cwd: Path
    env: dict[str, str]
    stdout: Path
    stderr: Path
    stdin: Path | None = None
    #: Descriptors the child inherits (for the box's mounts).
    pass_fds: tuple[int, ...] = ()
    carriers: int = 0


class Supervisor:
    """Starts, watches, pauses and ends process trees."""

    def __init__(self, grace_seconds: float = GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds

    async def spawn(self, args: SpawnArgs) -> Running:
        """Start ``args.argv``; raises ``OSError`` when it cannot start."""
        with _opened(args.stdin, args.stdout, args.stderr) as (fd_in, fd_out, fd_err):
            proc = await asyncio.create_subprocess_exec(
                *args.argv,
                stdin=fd_in,
                stdout=fd_out,
                stderr=fd_err,
                cwd=str(args.cwd),
                env=args.env,
                start_new_session=True,
                pass_fds=args.pass_fds,
            )
        stat = read_stat(proc.pid)
        return Running(
            proc=proc,
            pid=proc.pid,
            start_ticks=None if stat is None else stat.start_ticks,
            carriers=args.carriers,
        )

    async def watch(self, run: Running, timeout: float) -> int:
        """Wait for the leader to exit, ending the tree once it has run ``timeout`` seconds.

        Paused time does not count against ``timeout``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        exited = asyncio.ensure_future(run.proc.wait())
        try:
            while not exited.done():
                remaining: float | None = None
                if run.paused_since is None:
                    remaining = timeout - run.active_seconds(loop.time(), started)
                    if remaining <= 0:
                        if run.end_reason is None:
                            run.end_reason = "timeout"
                        self.terminate_soon(run)
                        break
                run.changed.clear()
                changed = asyncio.ensure_future(run.changed.wait())
                await asyncio.wait(
                    {exited, changed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
            returncode = await exited
        finally:
            exited.cancel()
        if run.killer is not None:
            await run.killer
        return returncode

    def pause(self, run: Running) -> None:
        """SIGSTOP the whole tree; its timeout stops counting."""
        if run.paused_since is None:
            run.paused_since = asyncio.get_running_loop().time()
            run.changed.set()
        for stat in _members(run):
            _send(stat.pid, signal.SIGSTOP)

    def resume(self, run: Running) -> None:
        """SIGCONT the whole tree; its timeout counts again."""
        for stat in _members(run):
            _send(stat.pid, signal.SIGCONT)
        if run.paused_since is not None:
            run.paused_total += asyncio.get_running_loop().time() - run.paused_since
            run.paused_since = None
            run.changed.set()

    def terminate_soon(self, run: Running) -> None:
        """Start ending the whole tree of ``run`` (once)."""
        if run.killer is None:
            run.killer = asyncio.ensure_future(self._end_tree(run))

    async def _end_tree(self, run: Running) -> None:
        members = _members(run)
        carriers = {run.pid} if run.carriers else set()
        if run.carriers > 1:
            carriers.update(s.pid for s in members if s.ppid == run.pid)
        for stat in members:
            if stat.pid not in carriers:
                _send(stat.pid, signal.SIGTERM)
            _send(stat.pid, signal.SIGCONT)
        setting_up = carriers and all(stat.pid in carriers for stat in members)
        if setting_up and run.proc.returncode is None:
            # The box is still being set up: no code to give a grace period to.
            _send(run.pid, signal.SIGKILL)
        if run.paused_since is not None:
            run.paused_total += asyncio.get_running_loop().time() - run.paused_since
            run.paused_since = None
            run.changed.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        while loop.time() < deadline:
            if run.proc.returncode is not None and not any(_alive(s) for s in members):
                return
            await asyncio.sleep(0.05)
        leader_alive = run.proc.returncode is None
        if leader_alive:
            _send(run.pid, signal.SIGKILL)
        for stat in members:
            if stat.pid != run.pid and _alive(stat):
                _send(stat.pid, signal.SIGKILL)
        if leader_alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
