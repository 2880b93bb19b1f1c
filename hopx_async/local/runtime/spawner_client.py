"""The server's end of the spawner: one spawner process per event loop, and its socket.

The event loop never forks: a spawner process (``spawner.py``, standard library only, run
as ``python -I -S``) opens the output files, forks and execs, reaps, and reports each exit on
one socket. ``SpawnerProcess`` sends it start requests (with the descriptors to pass) without
blocking the loop and resolves each start's future, and each child's exit, from its answers.
"""

from __future__ import annotations

import asyncio
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

from .framesend import FrameSender
from .spawner import frame, unframe

__all__ = ["SPAWNERS", "Child", "Script", "SpawnArgs", "SpawnerProcess", "spawners_from_env"]

logger = logging.getLogger("hopx_async.local")

#: The spawner process's program (run by path: it needs the standard library only).
_SPAWNER_FILE = str(Path(__file__).with_name("spawner.py"))
#: Spawner processes per event loop, at most (``HOPX_LOCAL_SPAWNERS``). Each starts one
#: process at a time. One keeps up with what two cores can run (about 800 starts of ``true``
#: a second measured); more in parallel only made boxes being set up crowd out the server's
#: loop and its clients (detection latency rose by half in the benchmark matrix).
SPAWNERS = 1


def spawners_from_env() -> int:
    """``HOPX_LOCAL_SPAWNERS`` if it is a whole number from 1 to 64, else ``SPAWNERS``."""
    raw = os.environ.get("HOPX_LOCAL_SPAWNERS", "")
    if raw.strip().isdigit() and 1 <= int(raw) <= 64:
        return int(raw)
    if raw:
        logger.warning(
            "HOPX_LOCAL_SPAWNERS=%r is not a number from 1 to 64; using %d", raw, SPAWNERS
        )
    return SPAWNERS


@attrs.frozen
class Script:
    """Code a process reads: at descriptor ``fd`` (0: stdin), or, with ``file`` (a suffix),
    from a private file whose path replaces ``spawner.SOURCE`` in the argv."""

    text: str = attrs.field(repr=False)
    fd: int = 0
    file: str | None = None


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
    script: Script | None = None
    #: Descriptors for the child's 0-1-2 (sent along; the caller closes its own), instead of
    #: ``stdin``/``stdout``/``stderr``; ``ctty``: its stdin is its controlling terminal.
    stdio: tuple[int, int, int] | None = None
    ctty: bool = False


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


class SpawnerProcess:
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
        self._sender = FrameSender(loop, ours, self._lost, owns_fds=False)
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
        request: dict[str, Any] = {
            "n": self._count,
            "argv": list(args.argv),
            "cwd": str(args.cwd),
            "env": args.env,
            "stdin": None if args.stdin is None else str(args.stdin),
            "stdout": str(args.stdout),
            "stderr": str(args.stderr),
            "fds": list(args.pass_fds),
        }
        sent = list(args.pass_fds)
        if args.stdio is not None:
            for key in ("stdin", "stdout", "stderr"):
                del request[key]
            request["fds"] = [0, 1, 2, *args.pass_fds]
            sent = [*args.stdio, *args.pass_fds]
        if args.ctty:
            request["ctty"] = True
        if args.script is not None:
            request["script"] = args.script.text
            request["script_fd"] = args.script.fd
            if args.script.file:
                request["script_file"] = args.script.file
        self._pending[self._count] = future
        self._sender.send(frame(request), sent)
        return future

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
        self._sender.close()
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
