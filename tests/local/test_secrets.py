"""A sandbox's secrets stay off the host's process table.

The attack: a local user who is neither root, the server's user nor a box's reads every
``/proc/*/cmdline`` (and every ``environ`` it may) while a sandbox runs code with a secret in
its environment and in its code. Neither may show up. Runs with and without the box.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .helpers import Api, Sandbox, eventually, marker

pytestmark = pytest.mark.anyio

#: A uid nobody else uses here: not root, not the server's, not a box's (65534 and up).
SNOOPER = 65533

SNOOP = r"""
import json, os, sys
needles = [n.encode() for n in json.load(sys.stdin)]  # never on its own argv
hits, read_cmdlines, read_environs = [], 0, 0
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    for part in ("cmdline", "environ"):
        try:
            with open(f"/proc/{entry}/{part}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if part == "cmdline":
            read_cmdlines += 1
        else:
            read_environs += 1
        hits += [f"{entry}/{part}" for n in needles if n in data]
print(json.dumps({"hits": hits, "cmdlines": read_cmdlines, "environs": read_environs}))
"""


def snoop(*needles: str) -> dict[str, Any]:
    """Read the host's process table as ``SNOOPER``; what matched ``needles``."""
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    drop = ["setpriv", "--reuid", str(SNOOPER), "--regid", str(SNOOPER), "--clear-groups"]
    done = subprocess.run(
        [*drop, python, "-I", "-c", SNOOP],
        input=json.dumps(needles).encode(),
        capture_output=True,
        timeout=60,
        check=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    return dict(json.loads(done.stdout))


@pytest.fixture
def can_snoop() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("reading /proc as another uid needs a root test run and setpriv")


async def test_env_and_code_never_on_the_process_table(
    api: Api, sbx: Sandbox, can_snoop: None
) -> None:
    env_secret = "envsecret" + secrets.token_hex(8)
    code_secret = "codesecret" + secrets.token_hex(8)
    shell_secret = "shellsecret" + secrets.token_hex(8)
    ready = "ready" + secrets.token_hex(4)
    code = f"import time\nkey = {code_secret!r}\nprint({ready!r}, flush=True)\ntime.sleep(60)\n"
    started = await api.background(sbx, code, env={"OPENAI_API_KEY": env_secret})
    command = await api.command(
        sbx, f"DB_PASSWORD={shell_secret}; echo {ready}; sleep 60", env={"TOKEN": env_secret}
    )

    async def both_ready() -> bool:
        for proc in (started, command):
            seen = await api.process(sbx, proc["process_id"])
            if ready not in seen["stdout"]:
                return False
        return True

    for _ in range(500):
        if await both_ready():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the processes did not start")
    seen = snoop(env_secret, code_secret, shell_secret)
    assert seen["cmdlines"] > 10  # it did read the process table
    assert seen["hits"] == []
    for proc in (started, command):
        await api.agent(sbx, "POST", f"/execute/kill/{proc['process_id']}")


async def test_thousands_of_variables(api: Api, sbx: Sandbox) -> None:
    env = {f"VAR_{n}": f"value-{n}" for n in range(3000)}
    env["BIG"] = "x" * (100 * 1024)
    code = "import os, json; print(json.dumps([len(os.environ), len(os.environ['BIG'])]))"
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "env": env})
    assert answer.status == 200, answer.body
    count, big = json.loads(answer.body["stdout"])
    assert count >= 3001
    assert big == 100 * 1024


@pytest.mark.parametrize("where", ["request", "sandbox", "create"])
async def test_a_value_past_128_kib_is_refused(api: Api, sbx: Sandbox, where: str) -> None:
    big = {"TOO_BIG": "x" * (128 * 1024)}
    if where == "request":
        answer = await api.agent(sbx, "POST", "/execute", json={"code": "print(1)", "env": big})
    elif where == "sandbox":
        answer = await api.agent(sbx, "PUT", "/env", json={"env_vars": big})
    else:
        answer = await api.cp(
            "POST", "/v1/sandboxes", json={"template_name": "base", "env_vars": big}
        )
    body = answer.expect_error(400, "INVALID_REQUEST")
    assert "TOO_BIG" in body["error"]
    assert "131072" in body["error"]


async def test_snooper_sees_the_table(can_snoop: None) -> None:
    # The reader itself works: it finds a needle that is on a command line.
    needle = marker()
    with subprocess.Popen(["sleep", "30", needle]) as proc:
        try:
            cmdline = f"/proc/{proc.pid}/cmdline"
            assert await eventually(lambda: needle.encode() in Path(cmdline).read_bytes())
            assert snoop(needle)["hits"]
        finally:
            proc.kill()
