"""The spawner process: forks and execs the server's processes, and reports their exits.

The server runs this file as a process of its own (``python -I -S spawner.py FD``, with
the standard library only, so it starts in milliseconds), connected by one Unix stream
socket. Everything that costs time per start happens here, on another core and under
another interpreter lock: opening the output files, ``posix_spawn`` (vfork + exec), reading
the child's start time, and reaping it. The server's event loop only sends one message per
start and reads one answer and one exit message.

Messages are a 4-byte big-endian length and a JSON object. The server sends
``{"n", "argv", "cwd", "env", "stdin", "stdout", "stderr", "fds"}``, with the descriptors
listed in ``fds`` attached (``SCM_RIGHTS``, in that order): each is given to the child at the
number named in ``fds``. The spawner answers ``{"n", "pid", "ticks"}`` or
``{"n", "errno", "error"}``, and once a child has exited, ``{"exit": pid, "code": code}``
(``code`` as ``subprocess`` gives it: the exit status, or ``-N`` after signal N). Its first
message, ``{"ready": true}``, says it is up.

It ends when the server closes the socket, and dies with the server (``PR_SET_DUMPABLE`` 0,
``PR_SET_PDEATHSIG``): a boxed child (``--die-with-parent``) then dies with it. It has no
secret to keep: it is started with an empty environment and reads no state.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["HEADER", "frame", "main", "unframe"]

#: the length prefix of every message
HEADER = struct.Struct(">I")
#: descriptors one read may carry (the kernel passes at most 253 per message)
_MAX_FDS = 253
_READ = 1 << 16
#: signals a child starts with at their defaults (Python ignores SIGPIPE and SIGXFSZ)
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGCHLD")
    if hasattr(signal, name)
)
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def frame(message: dict[str, Any]) -> bytes:
    """One message as it goes on the socket: its length (4 bytes, big-endian), then JSON.

    >>> buffer = bytearray(frame({"n": 1}) + frame({"n": 2})[:3])
    >>> list(unframe(buffer)), len(buffer)
    ([{'n': 1}], 3)
    """
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


def unframe(buffer: bytearray) -> Iterator[dict[str, Any]]:
    """Take every whole message off the front of ``buffer``; a partial one stays there."""
    while len(buffer) >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer)
        end = HEADER.size + size
        if len(buffer) < end:
            return
        message: dict[str, Any] = json.loads(buffer[HEADER.size : end])
        del buffer[:end]
        yield message


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _start_ticks(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None


def _executable(argv0: str, env: dict[str, str]) -> str:
    """The file ``argv0`` names: as is when it has a slash, else found on the child's PATH."""
    if "/" in argv0:
        return argv0
    denied = False
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", argv0)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise OSError(code, os.strerror(code), argv0)


class Spawner:
    """The process's one loop: requests in, answers and exits out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []
        self.children: set[int] = set()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(frame(message))

    def read(self) -> bool:
        """Take what the socket has; False once the server has closed it."""
        data, ancillary, _, _ = self.sock.recvmsg(
            _READ, socket.CMSG_SPACE(_MAX_FDS * 4), getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                self.fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if not data:
            return False
        self.buffer += data
        for request in unframe(self.buffer):
            passed = [self.fds.pop(0) for _ in request.get("fds", ())]
            self.spawn(request, passed)
            self.reap()  # an exit is reported at once, not after a burst of starts
        return True

    def spawn(self, request: dict[str, Any], passed: list[int]) -> None:
        opened: list[int] = []
        try:
            targets = [int(fd) for fd in request.get("fds", ())]
            floor = max([*targets, 2]) + 1
            # Every descriptor the child gets is first moved above the numbers it is given
            # at, so that no dup2 of the child overwrites one that a later dup2 reads.
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in passed]
            opened.extend(moved)
            stdin = request.get("stdin") or os.devnull
            opened.append(_open_above(stdin, os.O_RDONLY, floor))
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            for stream in ("stdout", "stderr"):
                opened.append(_open_above(request[stream], flags, floor))
            actions: list[tuple[Any, ...]] = [
                (os.POSIX_SPAWN_DUP2, opened[-3], 0),
                (os.POSIX_SPAWN_DUP2, opened[-2], 1),
                (os.POSIX_SPAWN_DUP2, opened[-1], 2),
            ]
            for src, dst in zip(moved, targets, strict=True):
                actions.append((os.POSIX_SPAWN_DUP2, src, dst))
            env = {str(k): str(v) for k, v in request["env"].items()}
            argv = [str(arg) for arg in request["argv"]]
            os.chdir(request["cwd"])
            pid = os.posix_spawn(
                _executable(argv[0], env),
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as exc:
            code = exc.errno if exc.errno is not None else errno.EIO
            self.send({"n": request["n"], "errno": code, "error": exc.strerror or str(exc)})
        except (ValueError, TypeError, KeyError) as exc:  # a NUL in argv or env, a bad request
            self.send({"n": request["n"], "errno": errno.EINVAL, "error": str(exc)})
        else:
            self.children.add(pid)
            self.send({"n": request["n"], "pid": pid, "ticks": _start_ticks(pid)})
        finally:
            for fd in [*opened, *passed]:
                os.close(fd)
            os.chdir("/")

    def reap(self) -> None:
        """Report every child that has exited."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _open_above(path: str, flags: int, floor: int) -> int:
    """Open ``path`` (close-on-exec) at a descriptor number of at least ``floor``."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    if fd >= floor:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """Serve the server on the socket at descriptor ``argv[1]`` until it closes it."""
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if len(argv) > 2 and os.getppid() != int(argv[2]):
        return 1  # the server died before the line above could tie this process to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the server to handle
    fd = int(argv[1])
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    woken_r, woken_w = os.pipe()
    for end in (woken_r, woken_w):
        os.set_blocking(end, False)
        os.set_inheritable(end, False)
    signal.set_wakeup_fd(woken_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    spawner = Spawner(sock)
    spawner.send({"ready": True})
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(woken_r, selectors.EVENT_READ, "woken")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "woken":
                    while True:
                        try:
                            if not os.read(woken_r, 512):
                                break
                        except BlockingIOError:
                            break
                    spawner.reap()
                elif not spawner.read():
                    return 0
            spawner.reap()
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
