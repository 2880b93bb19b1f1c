"""One server per state directory: an exclusive ``flock`` on ``STATE/server.lock``, held for
the server's life (the kernel drops it when the process ends, also on SIGKILL)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "StateDirInUse", "StateLock"]

LOCK_NAME = "server.lock"


class StateDirInUse(RuntimeError):
    """Another server holds the state directory."""


class StateLock:
    """The held lock of one state directory; ``release`` (or the process's end) frees it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> held = StateLock.acquire(root)
    >>> try:
    ...     StateLock.acquire(root)
    ... except StateDirInUse:
    ...     print("refused")
    refused
    >>> held.release()
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, root: Path) -> StateLock:
        """Take the lock of the state directory ``root`` (made if missing), or raise
        ``StateDirInUse`` naming the server that holds it; nothing else is touched."""
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = root / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirInUse(
                f"the state directory {root} is in use by another server{holder}; stop it"
                " first (hopx local stop --state-dir ...) or use another --state-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    @classmethod
    def probe(cls, root: Path) -> None:
        """Raise ``StateDirInUse`` if a server holds ``root`` now (the lock is not kept)."""
        if root.is_dir():
            cls.acquire(root).release()

    @staticmethod
    def free(lock: StateLock | None) -> None:
        """Release ``lock`` if there is one (releasing twice is harmless)."""
        if lock is not None:
            lock.release()

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
