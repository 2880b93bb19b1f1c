"""Running local processes: each leads its own session, output goes straight to files.

The supervisor knows nothing about sandboxes, boxes or HTTP. It starts an argv with its
stdout/stderr opened on files (the child writes to disk, the server never buffers output),
waits for it under a deadline that does not count paused time, and ends the whole tree below
it: SIGTERM (plus SIGCONT, so a paused tree can act on it), then SIGKILL after a grace period.

The event loop never forks: a fixed pair of long-lived spawner threads does the fork/exec
(they live as long as the supervisor, because a ``--die-with-parent`` box dies with the
*thread* that started it). Exits are watched without any thread: a pidfd per child, read by
the loop (``os.pidfd_open`` + ``add_reader``), or, where the kernel has no pidfd, one task that
polls every watched pid with ``waitpid(WNOHANG)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._procfs import ProcStat, all_stats, descendants, read_stat

__all__ = [
    "GRACE_SECONDS",
    "SPAWNER_THREADS",
    "Child",
    "Running",
    "SpawnArgs",
    "Supervisor",
    "exit_code_of",
]

logger = logging.getLogger("hopx_async.local")

#: Seconds between SIGTERM and SIGKILL when a process tree is ended.
GRACE_SECONDS = 1.0
#: Threads that fork/exec, whatever the number of sandboxes and processes.
SPAWNER_THREADS = 2
#: Without pidfds: seconds between two polls of the watched pids.
_POLL_SECONDS = 0.01


class Child:
    """A started child process: its pid, and its exit status once collected.

    ``returncode`` is None while it runs, then as ``subprocess``'s: the exit status, or
    ``-N`` after a death by signal N.
    """

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.pid = popen.pid
        self._popen = popen
        self._exited: asyncio.Future[int] = loop.create_future()

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """The exit status, once the child has exited."""
        return await asyncio.shield(self._exited)

    def collect(self) -> bool:
        """Reap the child if it has exited (never blocks); True once it is collected."""
        if self._exited.done():
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            pid, returncode = self.pid, 255
        else:
            if pid == 0:
                return False
            returncode = os.waitstatus_to_exitcode(status)
        # Popen would warn that the child is still running when it is garbage collected.
        self._popen.returncode = returncode
        self._exited.set_result(returncode)
        return True


class _Spawner:
    """A fixed set of long-lived daemon threads that run blocking spawns for the loop."""

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()

    def run(self, loop: asyncio.AbstractEventLoop, job: Callable[[], Any]) -> asyncio.Future[Any]:
        if not self._threads:
            for n in range(self._size):
                thread = threading.Thread(
                    target=self._work, name=f"hopx-local-spawner-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, job))
        return future

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            loop, future, job = item
            try:
                result = job()
            except BaseException as exc:
                _hand_over(loop, future, None, exc)
            else:
                _hand_over(loop, future, result, None)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


class _ExitWatcher:
    """Collects exited children for one loop: pidfds where possible, else a polling task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, use_pidfd: bool) -> None:
        self._loop = loop
        self._use_pidfd = use_pidfd and hasattr(os, "pidfd_open")
        self._polled: set[Child] = set()
        self._poller: asyncio.Task[None] | None = None

    def watch(self, child: Child) -> None:
        if self._use_pidfd:
            try:
                fd = os.pidfd_open(child.pid)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    # No pidfds here (old kernel, seccomp): poll from now on.
                    logger.info("pidfd_open is not available (%s); polling child exits", exc)
                    self._use_pidfd = False
                # Out of descriptors: this one child is polled.
            else:
                self._loop.add_reader(fd, self._exited, fd, child)
                return
        self._polled.add(child)
        if self._poller is None or self._poller.done():
            self._poller = self._loop.create_task(self._poll())

    def _exited(self, fd: int, child: Child) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        if not child.collect():  # readable yet not reapable: never spin on it, poll it
            self._polled.add(child)
            if self._poller is None or self._poller.done():
                self._poller = self._loop.create_task(self._poll())

    async def _poll(self) -> None:
        while self._polled:
            await asyncio.sleep(_POLL_SECONDS)
            for child in list(self._polled):
                if child.collect():
                    self._polled.discard(child)


@attrs.define(eq=False)
class Running:
    """One started process (the leader of its own session and process group)."""

    child: Child
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


def _spawn(args: SpawnArgs) -> tuple[subprocess.Popen[bytes], ProcStat | None]:
    """Fork/exec ``args`` (in a spawner thread); the child leads a new session."""
    with _opened(args.stdin, args.stdout, args.stderr) as (fd_in, fd_out, fd_err):
        popen = subprocess.Popen(
            list(args.argv),
            stdin=fd_in,
            stdout=fd_out,
            stderr=fd_err,
            cwd=str(args.cwd),
            env=args.env,
            start_new_session=True,
            pass_fds=args.pass_fds,
        )
    return popen, read_stat(popen.pid)


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

    def __init__(
        self,
        grace_seconds: float = GRACE_SECONDS,
        *,
        spawner_threads: int = SPAWNER_THREADS,
        use_pidfd: bool = True,
    ) -> None:
        self.grace_seconds = grace_seconds
        self._spawner = _Spawner(spawner_threads)
        self._use_pidfd = use_pidfd
        self._watchers: dict[asyncio.AbstractEventLoop, _ExitWatcher] = {}

    async def spawn(self, args: SpawnArgs) -> Running:
        """Start ``args.argv`` (off the loop); raises ``OSError`` when it cannot start."""
        loop = asyncio.get_running_loop()
        watcher = self._watchers.get(loop)
        if watcher is None:
            watcher = self._watchers[loop] = _ExitWatcher(loop, self._use_pidfd)
        started = self._spawner.run(loop, lambda: _spawn(args))
        try:
            popen, stat = await asyncio.shield(started)
        except asyncio.CancelledError:
            # The child may start anyway: it is then watched and ended, never left behind.
            started.add_done_callback(lambda done: self._end_unwanted(done, watcher))
            raise
        child = Child(popen, loop)
        watcher.watch(child)
        return Running(
            child=child,
            pid=child.pid,
            start_ticks=None if stat is None else stat.start_ticks,
            carriers=args.carriers,
        )

    @staticmethod
    def _end_unwanted(done: asyncio.Future[Any], watcher: _ExitWatcher) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        popen, _ = done.result()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        watcher.watch(Child(popen, asyncio.get_running_loop()))

    def close(self) -> None:
        """Stop the spawner threads (after every child has ended: a boxed child dies with
        the thread that started it)."""
        self._spawner.close()
        self._watchers.clear()

    async def watch(self, run: Running, timeout: float) -> int:
        """Wait for the leader to exit, ending the tree once it has run ``timeout`` seconds.

        Paused time does not count against ``timeout``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        exited = asyncio.ensure_future(run.child.wait())
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
        if setting_up and run.child.returncode is None:
            # The box is still being set up: no code to give a grace period to.
            _send(run.pid, signal.SIGKILL)
        if run.paused_since is not None:
            run.paused_total += asyncio.get_running_loop().time() - run.paused_since
            run.paused_since = None
            run.changed.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        while loop.time() < deadline:
            if run.child.returncode is not None and not any(_alive(s) for s in members):
                return
            await asyncio.sleep(0.05)
        leader_alive = run.child.returncode is None
        if leader_alive:
            _send(run.pid, signal.SIGKILL)
        for stat in members:
            if stat.pid != run.pid and _alive(stat):
                _send(stat.pid, signal.SIGKILL)
        if leader_alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
