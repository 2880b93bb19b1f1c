"""Separation beyond namespaces: the kernel keyring is closed to every box.

The attack: code in sandbox A stores a key in its user keyring (``add_key``), searches for
one (``request_key``) and reads its keyring (``keyctl``), each through a raw syscall; in a box
each must fail with EPERM. The filter is also checked on its own.
"""

from __future__ import annotations

import json
import struct

import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.runtime.seccomp import filter_program

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

KEYRING = """
import ctypes, errno, json, platform
numbers = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *args)
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
add_key, request_key, keyctl = numbers
KEY_SPEC_USER_KEYRING = ctypes.c_long(-4)
print(json.dumps({
    "add_key": call(add_key, b"user", b"hopx-test", b"secret", ctypes.c_size_t(6),
                    KEY_SPEC_USER_KEYRING),
    "request_key": call(request_key, b"user", b"hopx-test", None, ctypes.c_long(0)),
    "keyctl": call(keyctl, ctypes.c_long(0), KEY_SPEC_USER_KEYRING, ctypes.c_long(0)),
}))
"""


async def test_keyring_calls_are_refused_in_a_box(
    api: Api, sbx: Sandbox, backend: LocalBackend
) -> None:
    if backend.isolation != "bubblewrap":
        pytest.skip("the seccomp filter comes with the bubblewrap box")
    answer = await api.agent(sbx, "POST", "/execute", json={"code": KEYRING})
    assert answer.status == 200, answer.body
    assert answer.body["exit_code"] == 0, answer.body
    seen = json.loads(answer.body["stdout"].strip().splitlines()[-1])
    assert seen == {"add_key": "EPERM", "request_key": "EPERM", "keyctl": "EPERM"}


def test_the_filter_checks_the_architecture_first() -> None:
    program = filter_program()
    records = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    # Load the architecture (offset 4 of seccomp_data), then compare it.
    assert records[0] == (0x20, 0, 0, 4)
    assert records[1][0] == 0x15 and records[1][3] == 0xC000003E
    assert any(code == 0x15 and k == 0xC00000B7 for code, _, _, k in records)
    # Ends with "allow" and "EPERM".
    assert records[-2] == (0x06, 0, 0, 0x7FFF0000)
    assert records[-1] == (0x06, 0, 0, 0x00050001)
