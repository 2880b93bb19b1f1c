"""Frames queued for a non-blocking socket, with descriptors passed along (``SCM_RIGHTS``).

The server speaks to its spawner and to every box's supervisor over such a socket: a request
is one frame (``spawner.frame``), sent with the descriptors it hands over. ``FrameSender``
never blocks the event loop: what the socket does not take now waits in a queue and goes out
when the socket is writable again.
"""

from __future__ import annotations

import array
import asyncio
import collections
import os
import socket
from collections.abc import Callable

__all__ = ["FrameSender"]


class FrameSender:
    """The sending half of a framed socket.

    ``on_error`` is called (once per failure) when the socket breaks. With ``owns_fds``, the
    descriptors of a frame are closed here once sent, or when the sender is closed first.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_error: Callable[[OSError], None],
        *,
        owns_fds: bool,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._on_error = on_error
        self._owns_fds = owns_fds
        self._out: collections.deque[tuple[memoryview, list[int]]] = collections.deque()
        self._writing = False
        self._open = True

    def send(self, data: bytes, fds: list[int]) -> None:
        """Queue one frame with ``fds`` (sent with its first byte) and send what can go now."""
        self._out.append((memoryview(data), fds))
        self._flush()

    def _flush(self) -> None:
        while self._out and self._open:
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
                self._on_error(exc)
                return
            if self._owns_fds:
                for fd in fds:
                    os.close(fd)
            if sent < len(data):
                self._out[0] = (data[sent:], [])  # the descriptors went with the first part
                continue
            self._out.popleft()
        self._want_writer(bool(self._out) and self._open)

    def _want_writer(self, want: bool) -> None:
        if want != self._writing:
            self._writing = want
            if want:
                self._loop.add_writer(self._fd, self._flush)
            else:
                self._loop.remove_writer(self._fd)

    def close(self) -> None:
        """Stop sending: drop the queue (closing its descriptors when owned). The socket
        itself stays open (its owner closes it)."""
        self._open = False
        self._want_writer(False)
        if self._owns_fds:
            for _, fds in self._out:
                for fd in fds:
                    os.close(fd)
        self._out.clear()
