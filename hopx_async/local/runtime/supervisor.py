"""Running local processes: each leads its own session, output goes straight to files.

The supervisor knows nothing about sandboxes, boxes or HTTP. It starts an argv with its
stdout/stderr opened on files (the child writes to disk, the server never buffers output),
waits for it under a deadline that does not count paused time, and ends the whole tree below
it: SIGTERM (plus SIGCONT, so a paused tree can act on it), then SIGKILL after a grace period.

The event loop never forks: one spawner process per loop (``spawner.py``, started with the
first process) opens the output files, forks and execs, reaps, and reports each exit on one
socket. No thread per child, no thread for spawning, no fork in the server's interpreter;
a ``--die-with-parent`` box dies with the spawner, which dies with the server.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .procfs import ProcStat, all_stats, descendants, read_stat
from .spawner import frame, unframe
from .tasks import to_the_end

__all__ = [
    "GRACE_SECONDS",
    "SPAWNERS",
    "Child",
    "Running",
    "SpawnArgs",
    "Supervisor",
    "exit_code_of",
]

logger = logging.getLogger("hopx_async.local")

#: Seconds between SIGTERM and SIGKILL when a process tree is ended.
GRACE_SECONDS = 1.0
#: The spawner process's program (run by path: it needs the standard library only).
_SPAWNER_FILE = str(Path(__file__).with_name("spawner.py"))
#: Spawner processes per event loop, at most (``HOPX_LOCAL_SPAWNERS``). Each starts one
#: process at a time. One keeps up with what two cores can run (about 800 starts of ``true``
#: a second measured); more in parallel only made boxes being set up crowd out the server's
#: loop and its clients (detection latency rose by half in the benchmark matrix).
SPAWNERS = 1


def _spawners_from_env() -> int:
    """``HOPX_LOCAL_SPAWNERS`` if it is a whole number from 1 to 64, else ``SPAWNERS``."""
    raw = os.environ.get("HOPX_LOCAL_SPAWNERS", "")
    if raw.strip().isdigit() and 1 <= int(raw) <= 64:
        return int(raw)
    if raw:
        logger.warning(
            "HOPX_LOCAL_SPAWNERS=%r is not a number from 1 to 64; using %d", raw, SPAWNERS
        )
    return SPAWNERS


class Child:
    """A started child process: its pid, and its exit status once the spawner reported it.

    ``returncode`` is None while it runs, then as ``subprocess``'s: the exit status, or
    ``-N`` after a death by signal N.
    """

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self._exited: asyncio.Future[int] = loop.create_future()

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    def exit_future(self) -> asyncio.Future[int]:
        """The future of the exit status (await it through ``asyncio.shield``)."""
        return self._exited

    def exited(self, returncode: int) -> None:
        """Record the exit status (the first report counts)."""
        if not self._exited.done():
            self._exited.set_result(returncode)


class _SpawnerProcess:
    """The spawner process of one event loop (``spawner.py``), and its socket.

    Requests go out through a queue that never blocks the loop; answers and exit reports come
    back on a reader. Should the process die, pending starts fail with ``OSError`` and the
    trees it had started are killed (nothing would report their exits any more); the next
    start makes a new one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _SPAWNER_FILE, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                env={},  # the server's environment (its key, ...) stays in the server
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._fd = ours.fileno()
        self._buffer = bytearray()
        self._out: collections.deque[tuple[memoryview, list[int]]] = collections.deque()
        self._writing = False
        self._pending: dict[int, asyncio.Future[tuple[Child, str | None]]] = {}
        self._children: dict[int, Child] = {}
        self._count = 0
        self.alive = True
        #: Whether it said it is up (until then a start sent to it waits for its startup).
        self.ready = False
        loop.add_reader(self._fd, self._readable)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def in_flight(self) -> int:
        """Starts asked for and not answered yet."""
        return len(self._pending)

    def spawn(self, args: SpawnArgs) -> asyncio.Future[tuple[Child, str | None]]:
        """Ask for ``args`` to be started: the child and its start ticks, or ``OSError``."""
        self._count += 1
        future: asyncio.Future[tuple[Child, str | None]] = self._loop.create_future()
        request = {
            "n": self._count,
            "argv": list(args.argv),
            "cwd": str(args.cwd),
            "env": args.env,
            "stdin": None if args.stdin is None else str(args.stdin),
            "stdout": str(args.stdout),
            "stderr": str(args.stderr),
            "fds": list(args.pass_fds),
        }
        self._pending[self._count] = future
        self._out.append((memoryview(frame(request)), list(args.pass_fds)))
        self._flush()
        return future

    def _flush(self) -> None:
        while self._out and self.alive:
            data, fds = self._out[0]
            try:
                if fds:
                    rights = array.array("i", fds)
                    sent = self._sock.sendmsg(
                        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                    )
                else:
                    sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(exc)
                return
            if sent < len(data):
                self._out[0] = (data[sent:], [])  # the descriptors went with the first part
                continue
            self._out.popleft()
        want = bool(self._out) and self.alive
        if want != self._writing:
            self._writing = want
            if want:
                self._loop.add_writer(self._fd, self._flush)
            else:
                self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self._buffer += data
        for message in unframe(self._buffer):
            self._take(message)

    def _take(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.ready = True
            return
        if "exit" in message:
            child = self._children.pop(message["exit"], None)
            if child is not None:
                child.exited(message["code"])
            return
        future = self._pending.pop(message["n"])
        if "pid" in message:
            child = self._children[message["pid"]] = Child(message["pid"], self._loop)
            future.set_result((child, message.get("ticks")))
        else:
            future.set_exception(OSError(message["errno"], message["error"]))

    def _lost(self, error: OSError | None) -> None:
        """The spawner is gone (or its socket broke): fail what waits on it."""
        if not self.alive:
            return
        self.alive = False
        logger.error(
            "the local backend's spawner process (pid %s) exited%s; the processes it started "
            "are killed",
            self._proc.pid,
            "" if error is None else f" ({error})",
        )
        self._detach()
        gone = OSError(errno.EPIPE, "the spawner process exited")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(gone)
        self._pending.clear()
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.exited(-signal.SIGKILL)
        self._children.clear()
        self._proc.poll()

    def _detach(self) -> None:
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._out.clear()
        self._sock.close()

    def close(self) -> None:
        """Close the socket (the spawner then exits) and reap the process."""
        if self.alive:
            self.alive = False
            self._detach()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


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
    #: Set while ``Supervisor.watch`` waits: done at a pause or resume, to look again.
    waker: asyncio.Future[None] | None = None

    def changed(self) -> None:
        """Wake the watch of this process (it was paused or resumed)."""
        if self.waker is not None:
            _wake(self.waker)

    def active_seconds(self, now: float, started: float) -> float:
        """Seconds it has been running (not paused) since ``started``."""
        paused = self.paused_total
        if self.paused_since is not None:
            paused += now - self.paused_since
        return now - started - paused


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


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
        self, grace_seconds: float = GRACE_SECONDS, *, spawners: int | None = None
    ) -> None:
        if spawners is not None and spawners < 1:
            raise ValueError("spawners must be at least 1")
        self.grace_seconds = grace_seconds
        self._size = _spawners_from_env() if spawners is None else spawners
        self._spawners: dict[asyncio.AbstractEventLoop, list[_SpawnerProcess]] = {}

    def spawner_pids(self) -> list[int]:
        """The pids of the running loop's spawner processes (none before the first start)."""
        pool = self._spawners.get(asyncio.get_running_loop(), [])
        return [spawner.pid for spawner in pool if spawner.alive]

    def _spawner(self, loop: asyncio.AbstractEventLoop) -> _SpawnerProcess:
        """The ready spawner with the fewest starts in flight.

        When every ready one is busy, another is started (up to the pool's size) for the
        starts to come; the start at hand only waits for one that is still starting up when
        none is ready.
        """
        pool = self._spawners.setdefault(loop, [])
        for n, spawner in enumerate(pool):
            if not spawner.alive:
                spawner.close()
                pool[n] = _SpawnerProcess(loop)
        ready = [spawner for spawner in pool if spawner.ready]
        best = min(ready, key=lambda spawner: spawner.in_flight, default=None)
        starting = any(not spawner.ready for spawner in pool)
        if (best is None or best.in_flight) and len(pool) < self._size and not starting:
            pool.append(_SpawnerProcess(loop))
        if best is None:
            best = min(pool, key=lambda spawner: spawner.in_flight)
        return best

    def prestart(self) -> None:
        """Start the running loop's first spawner now, so that the first start does not wait
        for an interpreter to start (call it on the loop's thread, which the spawner's life
        is tied to)."""
        self._spawner(asyncio.get_running_loop())

    async def spawn(self, args: SpawnArgs) -> Running:
        """Start ``args.argv`` (in a spawner process); raises ``OSError`` when it cannot."""
        started = self._spawner(asyncio.get_running_loop()).spawn(args)
        # The child may start anyway if this is cancelled: it is then ended, never left behind.
        child, ticks = await to_the_end(started, on_abandoned=self._end_unwanted)
        return Running(child=child, pid=child.pid, start_ticks=ticks, carriers=args.carriers)

    @staticmethod
    def _end_unwanted(started: tuple[Child, str | None]) -> None:
        child, _ = started
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the spawner processes (after every child has ended: a boxed child dies with
        the spawner that started it)."""
        for pool in self._spawners.values():
            for spawner in pool:
                spawner.close()
        self._spawners.clear()

    async def watch(self, run: Running, timeout: float) -> int:
        """Wait for the leader to exit, ending the tree once it has run ``timeout`` seconds.

        Paused time does not count against ``timeout``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        exited = run.child.exit_future()
        while not exited.done():
            remaining: float | None = None
            if run.paused_since is None:
                remaining = timeout - run.active_seconds(loop.time(), started)
                if remaining <= 0:
                    if run.end_reason is None:
                        run.end_reason = "timeout"
                    self.terminate_soon(run)
                    break
            # Wake at the exit, at a pause or resume, or at the deadline: plain futures and
            # one timer, no task (one of these waits runs per running process).
            woken = run.waker = loop.create_future()
            timer = None if remaining is None else loop.call_later(remaining, _wake, woken)
            exited.add_done_callback(woken.cancel)
            try:
                await asyncio.wait([woken])
            finally:
                exited.remove_done_callback(woken.cancel)
                if timer is not None:
                    timer.cancel()
                run.waker = None
        returncode = await asyncio.shield(exited)
        if run.killer is not None:
            await run.killer
        return returncode

    def pause(self, run: Running) -> None:
        """SIGSTOP the whole tree; its timeout stops counting."""
        if run.paused_since is None:
            run.paused_since = asyncio.get_running_loop().time()
            run.changed()
        for stat in _members(run):
            _send(stat.pid, signal.SIGSTOP)

    def resume(self, run: Running) -> None:
        """SIGCONT the whole tree; its timeout counts again."""
        for stat in _members(run):
            _send(stat.pid, signal.SIGCONT)
        if run.paused_since is not None:
            run.paused_total += asyncio.get_running_loop().time() - run.paused_since
            run.paused_since = None
            run.changed()

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
            run.changed()
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
