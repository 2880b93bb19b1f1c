"""The seccomp filter of every box: the kernel keyring's calls answer EPERM.

Boxes of a root server share the host's kernel; the keyring (``add_key``, ``keyctl``,
``request_key``) is charged and looked up per host uid, so container runtimes block it, and
so does this. The filter is classic BPF built here with ``struct`` (no dependency), for
x86_64 (and its i386 and x32 ABIs) and aarch64 (and its 32-bit ARM ABI); every other call,
and every call of an architecture it does not know, is allowed. bwrap loads it
(``--seccomp FD``).
"""

from __future__ import annotations

import errno
import os
import struct

__all__ = ["BLOCKED", "filter_program", "filter_fd"]

#: Names of the blocked calls.
BLOCKED = ("add_key", "request_key", "keyctl")

_AUDIT_ARCH = {
    "x86_64": 0xC000003E,
    "i386": 0x40000003,
    "aarch64": 0xC00000B7,
    "arm": 0x40000028,
}
#: (add_key, request_key, keyctl) per architecture
_NUMBERS = {
    "x86_64": (248, 249, 250),
    "i386": (286, 287, 288),
    "aarch64": (217, 218, 219),
    "arm": (309, 310, 311),
}
_X32_BIT = 0x40000000

_LD_W_ABS = 0x20
_ALU_AND_K = 0x54
_JEQ_K = 0x15
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
#: offsets in struct seccomp_data
_NR, _ARCH = 0, 4


def filter_program() -> bytes:
    """The filter as ``struct sock_filter`` records, ready for ``--seccomp``.

    >>> len(filter_program()) % 8, len(filter_program()) // 8 < 64
    (0, True)
    """
    # (code, jump-if-true label, jump-if-false label, k); labels: "deny", "next", None
    blocks: list[list[tuple[int, str | None, str | None, int]]] = []
    for arch, numbers in _NUMBERS.items():
        block: list[tuple[int, str | None, str | None, int]] = [
            (_LD_W_ABS, None, None, _ARCH),
            (_JEQ_K, None, "next", _AUDIT_ARCH[arch]),
            (_LD_W_ABS, None, None, _NR),
        ]
        if arch == "x86_64":  # x32 calls carry the same numbers with one more bit
            block.append((_ALU_AND_K, None, None, 0xFFFFFFFF & ~_X32_BIT))
        block += [(_JEQ_K, "deny", None, nr) for nr in numbers]
        block.append((_RET_K, None, None, _RET_ALLOW))
        blocks.append(block)
    flat: list[tuple[int, str | None, str | None, int, int]] = []  # with the block's end
    for block in blocks:
        end = len(flat) + len(block)
        flat += [(*ins, end) for ins in block]
    deny = len(flat) + 1  # after the final "allow"
    out = bytearray()
    for index, (code, true, false, k, end) in enumerate(flat):
        jt = jf = 0
        if code == _JEQ_K:
            jt = (deny if true == "deny" else index + 1) - index - 1
            jf = (end if false == "next" else index + 1) - index - 1
        out += struct.pack("=HBBI", code, jt, jf, k)
    out += struct.pack("=HBBI", _RET_K, 0, 0, _RET_ALLOW)
    out += struct.pack("=HBBI", _RET_K, 0, 0, _RET_ERRNO | errno.EPERM)
    return bytes(out)


def filter_fd() -> int:
    """A new descriptor (close-on-exec; a memory file read from its start) with the filter."""
    fd = os.memfd_create("hopx-seccomp", os.MFD_CLOEXEC)
    os.write(fd, filter_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
