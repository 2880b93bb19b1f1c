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
number named in ``fds`` (``stdin``/``stdout``/``stderr`` are paths to open, or absent when
descriptors 0-2 come in ``fds``); with ``"ctty": true`` its stdin, a terminal, becomes the
controlling terminal of its new session. Code never goes on a command line: ``script`` (text) is
written to a memory file given to the child at descriptor ``script_fd`` (0: its stdin), or,
with ``script_file`` (a suffix), to a private file whose path replaces the argv entry
``"\x00source"``. The spawner answers ``{"n", "pid", "ticks"}`` or
``{"n", "errno", "error"}``, and once a child has exited, ``{"exit": pid, "code": code}``
(``code`` as ``subprocess`` gives it: the exit status, or ``-N`` after signal N). Its first
message, ``{"ready": true}``, says it is up.

The same program runs in two roles. On the host (``spawner.py FD PARENT_PID``) it starts the
server's processes and boxes, ends when the server closes the socket, and dies with the server
(``PR_SET_DUMPABLE`` 0, ``PR_SET_PDEATHSIG``, then a check that its parent is still the server).
As the supervisor of one sandbox's box (``spawner.py FD box [LIMIT=N ...]``) it is the box's
pid 1: it sets the box's rlimits, attaches a pidfd of itself to ``ready`` and of each child to
its answer (so the server learns host pids), reaps every orphan of the box and reports only
its own children; it exits, and with it everything in the box, once the server's end of the
socket is gone. It has no secret to keep: it is started with an empty environment and reads
no state.
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
import termios
from collections.abc import Iterator
from typing import Any

__all__ = ["HEADER", "frame", "main", "unframe"]

#: the length prefix of every message
HEADER = struct.Struct(">I")
#: descriptors one read may carry (the kernel passes at most 253 per message)
_MAX_FDS = 253
_READ = 1 << 16
#: signals a child starts with at their defaults (Python ignores SIGPIPE and SIGXFSZ, a
#: box's supervisor some more)
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGPIPE",
        "SIGXFSZ",
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGCHLD",
        "SIGUSR1",
        "SIGUSR2",
    )
    if hasattr(signal, name)
)
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
#: the argv entry that stands for the path of a ``script_file``
SOURCE = "\x00source"
#: rlimits a box's supervisor may be asked to set (``NAME=VALUE`` arguments)
_LIMITS = {
    "nproc": "RLIMIT_NPROC",
    "fsize": "RLIMIT_FSIZE",
    "as": "RLIMIT_AS",
    "nofile": "RLIMIT_NOFILE",
}


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

    def __init__(self, sock: socket.socket, *, boxed: bool = False) -> None:
        self.sock = sock
        self.boxed = boxed
        self.buffer = bytearray()
        self.fds: list[int] = []
        self.children: set[int] = set()
        #: private source files (``script_file``), removed when their child is reaped
        self.files: dict[int, str] = {}

    def send(self, message: dict[str, Any], pid: int | None = None) -> None:
        """Send ``message``; in a box, with a pidfd of ``pid`` attached."""
        data = frame(message)
        if pid is None or not self.boxed:
            self.sock.sendall(data)
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            self.sock.sendall(data)
            return
        try:
            rights = struct.pack("i", pidfd)
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        finally:
            os.close(pidfd)

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
        source = None
        try:
            targets = [int(fd) for fd in request.get("fds", ())]
            script = request.get("script")
            script_fd = int(request.get("script_fd", 0))
            floor = max([*targets, 2, script_fd]) + 1
            # Every descriptor the child gets is first moved above the numbers it is given
            # at, so that no dup2 of the child overwrites one that a later dup2 reads.
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in passed]
            opened.extend(moved)
            actions: list[tuple[Any, ...]] = []
            if "stdout" in request:
                stdin = request.get("stdin") or os.devnull
                opened.append(_open_above(stdin, os.O_RDONLY, floor))
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                for stream in ("stdout", "stderr"):
                    opened.append(_open_above(request[stream], flags, floor))
                actions += [
                    (os.POSIX_SPAWN_DUP2, opened[-3], 0),
                    (os.POSIX_SPAWN_DUP2, opened[-2], 1),
                    (os.POSIX_SPAWN_DUP2, opened[-1], 2),
                ]
            for src, dst in zip(moved, targets, strict=True):
                actions.append((os.POSIX_SPAWN_DUP2, src, dst))
            argv = [str(arg) for arg in request["argv"]]
            if isinstance(script, str) and request.get("script_file"):
                source = _private_file(script, str(request["script_file"]))
                argv = [source if arg == SOURCE else arg for arg in argv]
            elif isinstance(script, str):
                memory = _memory_file(script, floor)
                opened.append(memory)
                actions.append((os.POSIX_SPAWN_DUP2, memory, script_fd))
            env = {str(k): str(v) for k, v in request["env"].items()}
            os.chdir(request["cwd"])
            if request.get("ctty"):
                pid = _fork_on_terminal(_executable(argv[0], env), argv, env, actions)
            else:
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
            error = exc.strerror or str(exc)
            if exc.filename is not None:
                error = f"{error}: {exc.filename!r}"
            self.send({"n": request["n"], "errno": code, "error": error})
        except (ValueError, TypeError, KeyError) as exc:  # a NUL in argv or env, a bad request
            self.send({"n": request["n"], "errno": errno.EINVAL, "error": str(exc)})
        else:
            self.children.add(pid)
            if source is not None:
                self.files[pid] = source
                source = None
            self.send({"n": request["n"], "pid": pid, "ticks": _start_ticks(pid)}, pid)
        finally:
            if source is not None:
                _remove_private(source)
            for fd in [*opened, *passed]:
                os.close(fd)
            os.chdir("/")

    def reap(self) -> None:
        """Report every child that has exited (a box's orphans are reaped silently)."""
        while self.children or self.boxed:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            self.children.discard(pid)
            source = self.files.pop(pid, None)
            if source is not None:
                _remove_private(source)
            self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork_on_terminal(
    executable: str, argv: list[str], env: dict[str, str], actions: list[tuple[Any, ...]]
) -> int:
    """Start ``argv`` as ``posix_spawn`` would, its stdin (a terminal) its controlling
    terminal: ``posix_spawn`` cannot make one (``TIOCSCTTY``), so this one start forks."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: nothing here may return into the spawner's loop
        os.setsid()
        for _, src, dst in actions:
            os.dup2(src, dst)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execve(executable, argv, env)
    finally:
        os._exit(127)


def _memory_file(text: str, floor: int) -> int:
    """A memory file holding ``text`` (read from its start), at a descriptor >= ``floor``."""
    fd = os.memfd_create("code", os.MFD_CLOEXEC)
    try:
        data = text.encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        if fd >= floor:
            return fd
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    finally:
        if fd < floor:
            os.close(fd)


def _private_file(text: str, suffix: str) -> str:
    """Write ``text`` to ``main<suffix>`` in a new 0700 directory under /tmp; its path."""
    import tempfile  # only for languages that need a named source file

    directory = tempfile.mkdtemp(prefix="hopx-code-")
    path = os.path.join(directory, "main" + "".join(c for c in suffix if c.isalnum() or c == "."))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _remove_private(path: str) -> None:
    for step in (os.unlink, os.rmdir):
        try:
            step(path)
        except OSError:
            pass
        path = os.path.dirname(path)


def _open_above(path: str, flags: int, floor: int) -> int:
    """Open ``path`` (close-on-exec) at a descriptor number of at least ``floor``."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    if fd >= floor:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    finally:
        os.close(fd)


def _set_limits(pairs: list[str]) -> None:
    """Lower this process's rlimits (its children inherit them): ``NAME=VALUE`` each."""
    import resource

    for pair in pairs:
        name, _, value = pair.partition("=")
        which = getattr(resource, _LIMITS[name])
        limit = int(value)
        resource.setrlimit(which, (limit, limit))


def main(argv: list[str]) -> int:
    """Serve the server on the socket at descriptor ``argv[1]`` until it closes it."""
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    boxed = len(argv) > 2 and argv[2] == "box"
    if len(argv) > 2 and not boxed and os.getppid() != int(argv[2]):
        return 1  # the server died before the line above could tie this process to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the server to handle
    if boxed:
        # Code of the box runs with its uid: it must not stop or end its supervisor (as the
        # box's pid 1 it gets only the signals it handles; these it ignores).
        for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        _set_limits(argv[3:])
    fd = int(argv[1])
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    woken_r, woken_w = os.pipe()
    for end in (woken_r, woken_w):
        os.set_blocking(end, False)
        os.set_inheritable(end, False)
    signal.set_wakeup_fd(woken_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    spawner = Spawner(sock, boxed=boxed)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(woken_r, selectors.EVENT_READ, "woken")
    try:  # the server may be gone already (a quick stop): that is a normal end
        spawner.send({"ready": True}, os.getpid())
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
