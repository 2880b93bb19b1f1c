"""The server's end of one sandbox's box: its supervisor, spoken to over one socket.

A sandbox's box is made once (at its first start) and lives until the sandbox is killed,
expires or the server stops. Its pid 1 is ``spawner.py`` in its ``box`` role (the
*supervisor*): it starts the sandbox's processes, reaps them and the box's orphans, and
reports exits. It runs with the sandbox's uid beside untrusted code, so this end trusts
nothing it says: frames are bounded (``MAX_FRAME``) and checked field by field, a pid is only
believed through a pidfd the kernel translated (``/proc/self/fdinfo``) and whose process is a
child of the box's pid 1, and every start waits at most ``START_TIMEOUT``. Any breach ends the
box. Ending, pausing and resuming the box act from the host (SIGKILL / SIGSTOP / SIGCONT by
host pid), never by asking the supervisor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import signal
import socket
import struct
from typing import Any

from .framesend import FrameSender
from .procfs import ProcStat, all_stats, descendants, read_stat
from .spawner import HEADER, frame, unframe
from .spawner_client import Child, Script

__all__ = ["MAX_FRAME", "START_TIMEOUT", "BoxBroken", "SandboxBox", "host_pid_of_pidfd"]

logger = logging.getLogger("hopx_async.local")

#: The largest frame accepted from a supervisor (its messages are a few dozen bytes).
MAX_FRAME = 4096
#: Seconds a box has to come up, and a start to be answered.
START_TIMEOUT = 10.0


class BoxBroken(OSError):
    """The box's supervisor is gone or broke the protocol."""


def host_pid_of_pidfd(fd: int) -> tuple[int, list[int]]:
    """``(pid, nspids)`` of the process a pidfd refers to, in this process's namespace (the
    pid is 0 once the process has been reaped)."""
    pid, nspids = 0, []
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f.read().decode("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            if key == "Pid":
                pid = max(int(value), 0)
            elif key == "NSpid":
                nspids = [int(v) for v in value.split()]
    return pid, nspids


def _int(message: dict[str, Any], key: str, low: int = 0, high: int = 2**31) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BoxBroken(errno.EPROTO, f"the box's supervisor sent a bad {key!r}")
    return value


class SandboxBox:
    """One sandbox's box: start processes in it, know its pids, end it from the host."""

    def __init__(self, sandbox_id: str, sock: socket.socket) -> None:
        self.sandbox_id = sandbox_id
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._buffer = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._sender = FrameSender(self._loop, sock, self.lost, owns_fds=True)
        self._pending: dict[int, asyncio.Future[tuple[Child, str | None]]] = {}
        #: pid in the box -> its child
        self._children: dict[int, Child] = {}
        self._count = 0
        self.alive = True
        #: the host pid and start ticks of the box's pid 1 (its supervisor), once up
        self.init_pid = 0
        self.init_ticks: str | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._fd, self._readable)

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the supervisor said it is up (``BoxBroken`` when it did not in time)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.lost(BoxBroken(errno.ETIMEDOUT, "the box did not come up in time"))
            raise BoxBroken(errno.ETIMEDOUT, "the box did not come up in time") from None

    # -- starting -----------------------------------------------------------------------

    def spawn(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        stdio: tuple[int, int, int],
        script: Script | None,
        *,
        ctty: bool = False,
    ) -> asyncio.Future[tuple[Child, str | None]]:
        """Ask for ``argv`` to start in the box with ``stdio`` (descriptors, sent along and
        closed here): its child (host pid) and start ticks, or ``OSError``. With ``ctty``,
        its stdin (a terminal) becomes its controlling terminal."""
        future: asyncio.Future[tuple[Child, str | None]] = self._loop.create_future()
        if not self.alive:
            for fd in stdio:
                os.close(fd)
            future.set_exception(BoxBroken(errno.EPIPE, "the sandbox's box has ended"))
            return future
        self._count += 1
        request: dict[str, Any] = {
            "n": self._count,
            "argv": argv,
            "cwd": cwd,
            "env": env,
            "fds": [0, 1, 2],
        }
        if ctty:
            request["ctty"] = True
        if script is not None:
            request["script"] = script.text
            request["script_fd"] = script.fd
            if script.file:
                request["script_file"] = script.file
        self._pending[self._count] = future
        self._sender.send(frame(request), list(stdio))
        timer = self._loop.call_later(START_TIMEOUT, self._start_timed_out, future)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _start_timed_out(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self.lost(BoxBroken(errno.ETIMEDOUT, "the box's supervisor did not answer a start"))

    # -- what the supervisor says --------------------------------------------------------

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(
                1 << 16, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lost(exc)
            return
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                self._fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if not data:
            self.lost(None)
            return
        self._buffer += data
        try:
            if len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if size > MAX_FRAME:
                    raise BoxBroken(errno.EMSGSIZE, "the box's supervisor sent a frame too large")
            for message in unframe(self._buffer):
                if not isinstance(message, dict):
                    raise BoxBroken(errno.EPROTO, "the box's supervisor sent a bad message")
                self._take(message)
                if len(self._buffer) >= HEADER.size:
                    (size,) = HEADER.unpack_from(self._buffer)
                    if size > MAX_FRAME:
                        raise BoxBroken(errno.EMSGSIZE, "the box's supervisor sent a large frame")
            if len(self._fds) > 16:
                raise BoxBroken(errno.EPROTO, "the box's supervisor sent stray descriptors")
        except (BoxBroken, ValueError, OSError) as exc:
            logger.error("sandbox %s: %s; its box is ended", self.sandbox_id, exc)
            self.lost(exc if isinstance(exc, OSError) else None)

    def _pidfd(self) -> tuple[int, list[int]]:
        if not self._fds:
            raise BoxBroken(errno.EPROTO, "the box's supervisor sent no pidfd")
        fd = self._fds.popleft()
        try:
            return host_pid_of_pidfd(fd)
        finally:
            os.close(fd)

    def _child(self, nspid: int) -> tuple[int, str | None]:
        """The host pid and start time of a started child, from its pidfd: ``(0, None)``
        when it ended and was reaped before it could be read here (also while its stat is
        read: the pidfd, held open meanwhile, then names no pid any more)."""
        if not self._fds:
            raise BoxBroken(errno.EPROTO, "the box's supervisor sent no pidfd")
        fd = self._fds.popleft()
        try:
            pid, nspids = host_pid_of_pidfd(fd)
            if not pid:
                return 0, None
            stat = read_stat(pid)
            if nspids[-1:] == [nspid] and stat is not None and stat.ppid == self.init_pid:
                return pid, stat.start_ticks
            if host_pid_of_pidfd(fd)[0] == 0:
                return 0, None  # reaped between the two reads
            raise BoxBroken(errno.EPROTO, "the box's supervisor named a foreign pid")
        finally:
            os.close(fd)

    def _take(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            if self._ready.done():
                raise BoxBroken(errno.EPROTO, "the box's supervisor said ready twice")
            pid, nspids = self._pidfd()
            if pid <= 0 or nspids[-1:] != [1]:
                raise BoxBroken(errno.EPROTO, "the box's supervisor is not the box's pid 1")
            stat = read_stat(pid)
            self.init_pid = pid
            self.init_ticks = None if stat is None else stat.start_ticks
            self._ready.set_result(None)
            return
        if "exit" in message:
            nspid = _int(message, "exit", 2)
            code = _int(message, "code", -64, 255)
            child = self._children.pop(nspid, None)
            if child is not None:
                child.exited(code)
            return
        n = _int(message, "n", 1, self._count)
        future = self._pending.pop(n, None)
        if future is None:
            raise BoxBroken(errno.EPROTO, "the box's supervisor answered a start twice")
        if "pid" in message:
            nspid = _int(message, "pid", 2)
            pid, ticks = self._child(nspid)
            # pid 0: the process ended (and was reaped) before its pid could be read here
            child = self._children[nspid] = Child(pid, self._loop)
            if not future.done():
                future.set_result((child, ticks))
        else:
            code = _int(message, "errno", 1, 4095)
            text = message.get("error")
            reason = text[:500] if isinstance(text, str) else os.strerror(code)
            if not future.done():
                future.set_exception(OSError(code, reason))

    # -- from the host ------------------------------------------------------------------

    def members(self) -> list[ProcStat]:
        """Every live process of the box but its supervisor (host pids)."""
        if not self.init_pid or not self._init_is_ours():
            return []
        found = descendants({self.init_pid}, all_stats())
        return [s for s in found if s.pid != self.init_pid and not s.zombie]

    def _init_is_ours(self) -> bool:
        stat = read_stat(self.init_pid)
        return stat is not None and stat.start_ticks == self.init_ticks

    def freeze(self) -> None:
        """SIGSTOP every process of the box (until no new one appears)."""
        stopped: set[int] = set()
        for _ in range(20):
            fresh = [s for s in self.members() if s.pid not in stopped]
            if not fresh:
                return
            for stat in fresh:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(stat.pid, signal.SIGSTOP)
                stopped.add(stat.pid)

    def thaw(self) -> None:
        """SIGCONT every process of the box."""
        for stat in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stat.pid, signal.SIGCONT)

    def kill(self) -> None:
        """End the box and everything in it: SIGKILL of its pid 1 (the kernel then kills
        every process of its PID namespace)."""
        if self.init_pid and self._init_is_ours():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.init_pid, signal.SIGKILL)
        self.lost(None, quiet=True)

    def lost(self, error: OSError | None, *, quiet: bool = False) -> None:
        """The box is gone (or must be): fail what waits on it, report its children dead."""
        if not self.alive:
            return
        self.alive = False
        if not quiet:
            logger.warning(
                "sandbox %s: its box ended%s; its processes were killed",
                self.sandbox_id,
                "" if error is None else f" ({error})",
            )
        if self.init_pid and self._init_is_ours():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.init_pid, signal.SIGKILL)
        self._loop.remove_reader(self._fd)
        self._sender.close()
        while self._fds:
            os.close(self._fds.popleft())
        self._sock.close()
        gone = BoxBroken(errno.EPIPE, "the sandbox's box has ended")
        if not self._ready.done():
            self._ready.set_exception(gone)
            self._ready.exception()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(gone)
        self._pending.clear()
        for child in self._children.values():
            child.exited(-signal.SIGKILL)
        self._children.clear()
