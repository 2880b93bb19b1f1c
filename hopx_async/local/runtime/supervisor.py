"""Running local processes: each leads its own session, output goes straight to files.

The supervisor knows nothing about sandboxes, boxes or HTTP. It starts an argv with its
stdout/stderr opened on files (the child writes to disk, the server never buffers output),
waits for it under a deadline that does not count paused time, and ends the whole tree below
it: SIGTERM (plus SIGCONT, so a paused tree can act on it), then SIGKILL after a grace period.

The event loop never forks: one spawner process per loop (``spawner.py``, started with the
first process, spoken to by ``spawner_client``) opens the output files, forks and execs,
reaps, and reports each exit on one socket. No thread per child, no thread for spawning, no
fork in the server's interpreter; a ``--die-with-parent`` box dies with the spawner, which
dies with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import attrs

from .procfs import ProcStat, all_stats, descendants, read_stat
from .spawner_client import Child, SpawnArgs, SpawnerProcess, spawners_from_env
from .tasks import to_the_end

__all__ = [
    "GRACE_SECONDS",
    "Running",
    "Supervisor",
    "exit_code_of",
]

logger = logging.getLogger("hopx_async.local")

#: Seconds between SIGTERM and SIGKILL when a process tree is ended.
GRACE_SECONDS = 1.0


@attrs.define(eq=False)
class Running:
    """One started process (the leader of its own session and process group)."""

    child: Child
    pid: int
    start_ticks: str | None
    #: Pids that only carry the box (its outer and inner ``bwrap``): never sent SIGTERM.
    carriers: int = 0
    #: In a sandbox's box: ending it ends its process group only (what it left running in
    #: other sessions, daemons, lives on until the box ends).
    group_only: bool = False
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
    if pid <= 0:  # never a group or every process
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _killpg(pgid: int) -> None:
    if pgid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _members(run: Running) -> list[ProcStat]:
    """The leader, everything below it, and whatever is left in its process group (in a
    box: its process group only)."""
    if run.pid <= 0:
        return []
    stats = all_stats()
    if run.group_only:
        return [s for s in stats if s.pgid == run.pid and not s.zombie]
    tree = {s.pid: s for s in descendants({run.pid}, stats)}
    for stat in stats:
        if stat.pgid == run.pid and stat.pid not in tree:
            tree[stat.pid] = stat
    return [s for s in tree.values() if not s.zombie]


def _alive(stat: ProcStat) -> bool:
    now = read_stat(stat.pid)
    return now is not None and now.start_ticks == stat.start_ticks and not now.zombie


class Supervisor:
    """Starts, watches, pauses and ends process trees."""

    def __init__(
        self, grace_seconds: float = GRACE_SECONDS, *, spawners: int | None = None
    ) -> None:
        if spawners is not None and spawners < 1:
            raise ValueError("spawners must be at least 1")
        self.grace_seconds = grace_seconds
        self._size = spawners_from_env() if spawners is None else spawners
        self._spawners: dict[asyncio.AbstractEventLoop, list[SpawnerProcess]] = {}

    def spawner_pids(self) -> list[int]:
        """The pids of the running loop's spawner processes (none before the first start)."""
        pool = self._spawners.get(asyncio.get_running_loop(), [])
        return [spawner.pid for spawner in pool if spawner.alive]

    def _spawner(self, loop: asyncio.AbstractEventLoop) -> SpawnerProcess:
        """The ready spawner with the fewest starts in flight.

        When every ready one is busy, another is started (up to the pool's size) for the
        starts to come; the start at hand only waits for one that is still starting up when
        none is ready.
        """
        pool = self._spawners.setdefault(loop, [])
        for n, spawner in enumerate(pool):
            if not spawner.alive:
                spawner.close()
                pool[n] = SpawnerProcess(loop)
        ready = [spawner for spawner in pool if spawner.ready]
        best = min(ready, key=lambda spawner: spawner.in_flight, default=None)
        starting = any(not spawner.ready for spawner in pool)
        if (best is None or best.in_flight) and len(pool) < self._size and not starting:
            pool.append(SpawnerProcess(loop))
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

    async def adopt(self, started: asyncio.Future[tuple[Child, str | None]]) -> Running:
        """The process a sandbox's box is starting (see ``SandboxBox.spawn``), once started."""
        child, ticks = await to_the_end(started, on_abandoned=self._end_unwanted)
        return Running(child=child, pid=child.pid, start_ticks=ticks, group_only=True)

    @staticmethod
    def _end_unwanted(started: tuple[Child, str | None]) -> None:
        child, _ = started
        _killpg(child.pid)

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
            # The box is still being set up: no code to give a grace period to. The leader
            # ends by SIGTERM (exit 143, as a kill a moment later ends the code), which the
            # kernel fixes as its end as the signal is sent; the inner carrier, the init of
            # the box's pid namespace, ignores SIGTERM from outside: SIGKILL it and the group.
            _send(run.pid, signal.SIGTERM)
            for stat in members:
                if stat.pid != run.pid:
                    _send(stat.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
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
            _killpg(run.pid)
