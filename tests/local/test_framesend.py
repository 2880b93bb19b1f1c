"""The framed sockets of the spawner and the boxes. The sender: a frame larger
than the socket takes at once goes out whole, in order, with its descriptors once; queued
descriptors it owns are closed when it is closed first. The spawner: a server already gone
is a quiet end."""

from __future__ import annotations

import array
import asyncio
import os
import socket

import pytest

from hopx_async.local.runtime.framesend import FrameSender

pytestmark = pytest.mark.anyio


def _recv_all(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    data = bytearray()
    fds: list[int] = []
    while len(data) < size:
        chunk, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(8 * 4))
        assert chunk, "the sender's end closed early"
        data += chunk
        for _level, _kind, payload in ancillary:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    return bytes(data), fds


async def test_a_large_frame_goes_out_whole_with_its_descriptors_once() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    errors: list[OSError] = []
    sender = FrameSender(asyncio.get_running_loop(), ours, errors.append, owns_fds=True)
    read_end, write_end = os.pipe()
    first = os.urandom(3 << 20)  # far more than a socket buffer: most of it waits in the queue
    second = b"second frame"
    sender.send(first, [read_end])
    try:  # sent with the first part, at once: closed here (checked before the receiver
        os.fstat(read_end)  # gets a descriptor that could reuse the number)
        closed = False
    except OSError:
        closed = True
    assert closed, "an owned descriptor stays open after it was sent"
    sender.send(second, [])
    reader = asyncio.get_running_loop().run_in_executor(
        None, _recv_all, theirs, len(first) + len(second)
    )
    data, fds = await asyncio.wait_for(reader, 30)
    assert data == first + second
    assert len(fds) == 1  # once, with the first part only
    os.write(write_end, b"x")
    assert os.read(fds[0], 1) == b"x"  # the descriptor passed is the pipe's read end
    assert errors == []
    for fd in (*fds, write_end):
        os.close(fd)
    sender.close()
    ours.close()
    theirs.close()


async def test_closing_with_frames_queued_closes_their_descriptors() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    sender = FrameSender(asyncio.get_running_loop(), ours, lambda _exc: None, owns_fds=True)
    sender.send(os.urandom(4 << 20), [])  # fills the socket: what follows waits
    read_end, write_end = os.pipe()
    sender.send(b"late", [read_end])
    sender.close()
    try:
        os.fstat(read_end)
        closed = False
    except OSError:
        closed = True
    assert closed, "a queued descriptor leaked when the sender closed"
    os.close(write_end)
    ours.close()
    theirs.close()


async def test_a_broken_socket_is_reported() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    theirs.close()
    errors: list[OSError] = []
    sender = FrameSender(asyncio.get_running_loop(), ours, errors.append, owns_fds=False)
    sender.send(b"to nobody", [])
    assert len(errors) == 1 and isinstance(errors[0], BrokenPipeError)
    sender.close()
    ours.close()


def test_a_spawner_whose_server_is_already_gone_exits_quietly() -> None:
    """A quick stop closes the server's end before the spawner says it is up: a normal end
    (exit 0, nothing on stderr), not a BrokenPipeError traceback in the server's log."""
    import subprocess
    import sys
    from pathlib import Path

    import hopx_async.local.runtime.spawner as spawner_module

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.close()
    with theirs:
        program = Path(spawner_module.__file__)
        argv = [sys.executable, "-I", "-S", str(program), str(theirs.fileno()), str(os.getpid())]
        done = subprocess.run(
            argv, pass_fds=(theirs.fileno(),), capture_output=True, text=True, timeout=30
        )
    assert (done.returncode, done.stderr) == (0, "")
