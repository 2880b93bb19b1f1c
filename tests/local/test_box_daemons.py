"""One box per sandbox: its processes share a PID namespace, /tmp and daemons.

Written as what a user's code does on a VM: start a daemon in one process, use it from the
next; another sandbox must not see it, and killing the sandbox must end it. Needs the box.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, eventually, marker, pids_with_arg

pytestmark = pytest.mark.anyio

START_DAEMON = """
import subprocess, sys
p = subprocess.Popen(["sleep", "300", {arg!r}], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open("/tmp/daemon.pid", "w").write(str(p.pid))
print(p.pid)
"""

USE_DAEMON = """
import json, os
try:
    pid = int(open("/tmp/daemon.pid").read())
except OSError:
    print(json.dumps({"file": False}))
    raise SystemExit
try:
    os.kill(pid, 0)
    alive = True
except OSError:
    alive = False
cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode() if alive else ""
print(json.dumps({"file": True, "pid": pid, "alive": alive, "cmdline": cmdline}))
"""

LOOK_FOR = """
import json, os
found = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            if {arg!r}.encode() in open(f"/proc/{{entry}}/cmdline", "rb").read():
                found.append(int(entry))
        except OSError:
            pass
print(json.dumps({{"tmp": os.path.exists("/tmp/daemon.pid"), "found": found}}))
"""


@pytest.fixture
def boxed(backend: LocalBackend) -> None:
    if backend.isolation != "bubblewrap":
        pytest.skip("one box per sandbox needs the bubblewrap box")


async def run(api: Api, sbx: Sandbox, code: str) -> Any:
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 30})
    assert answer.status == 200, answer.body
    assert answer.body["exit_code"] == 0, answer.body
    return json.loads(answer.body["stdout"].strip().splitlines()[-1])


def host_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def test_a_daemon_is_there_for_the_next_process_only(
    api: Api, sbx: Sandbox, boxed: None
) -> None:
    arg = marker()
    started = await run(api, sbx, START_DAEMON.format(arg=arg))
    seen = await run(api, sbx, USE_DAEMON)
    assert seen == {"file": True, "pid": started, "alive": True, "cmdline": seen["cmdline"]}
    assert arg in seen["cmdline"]
    (host_pid,) = pids_with_arg(arg)
    listed = await api.agent(sbx, "GET", "/processes")
    assert any(arg in item["command"] for item in listed.body["processes"])
    other = await api.create()
    try:
        elsewhere = await run(api, other, LOOK_FOR.format(arg=arg))
        assert elsewhere == {"tmp": False, "found": []}
        # A pause freezes the whole box, the daemon included; a resume thaws it.
        paused = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/pause")
        assert paused.status == 200
        assert await eventually(lambda: host_state(host_pid) == "T")
        resumed = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/resume")
        assert resumed.status == 200
        assert await eventually(lambda: host_state(host_pid) != "T")
        killed = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/kill")
        assert killed.status == 200
        assert await eventually(lambda: not pids_with_arg(arg))
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")


async def test_processes_share_one_pid_namespace(api: Api, sbx: Sandbox, boxed: None) -> None:
    arg = marker()
    background = await api.command(sbx, f"sleep 60 {arg}")
    assert await eventually(lambda: bool(pids_with_arg(arg)))
    seen = await run(api, sbx, LOOK_FOR.format(arg=arg))
    assert len(seen["found"]) == 1  # the other process's sleep, by its pid in the box
    await api.agent(sbx, "POST", f"/execute/kill/{background['process_id']}")


async def test_killing_a_process_ends_its_group(api: Api, sbx: Sandbox, boxed: None) -> None:
    first, second = marker(), marker()
    started = await api.command(sbx, f"sleep 60 {first} & sleep 60 {second}; wait")
    assert await eventually(lambda: bool(pids_with_arg(first)) and bool(pids_with_arg(second)))
    killed = await api.agent(sbx, "POST", f"/execute/kill/{started['process_id']}")
    assert killed.status == 200
    assert await eventually(lambda: not pids_with_arg(first) and not pids_with_arg(second))
    done = await api.process(sbx, started["process_id"])
    assert done["status"] == "killed"


async def test_code_cannot_end_its_supervisor(api: Api, sbx: Sandbox, boxed: None) -> None:
    # Pid 1 of the box ignores every signal its own code sends; the box goes on.
    code = (
        "import os, signal\n"
        "for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGINT):\n"
        "    os.kill(1, sig)\n"
        "print('{}')\n"
    )
    await run(api, sbx, code)
    again = await run(api, sbx, "print('{\"still\": true}')")
    assert again == {"still": True}


async def test_the_supervisor_is_out_of_its_code_s_reach(
    api: Api, sbx: Sandbox, boxed: None
) -> None:
    # Same uid, but non-dumpable: its memory, descriptors and environment are closed to the
    # code beside it (and so its socket to the server).
    code = """
import json, os
def attempt(path):
    try:
        if path.endswith("/fd"):
            return "listed:" + ",".join(os.listdir(path))
        with open(path, "rb") as f:
            f.read(1)
        return "read"
    except OSError as exc:
        return "refused:" + type(exc).__name__
print(json.dumps({p: attempt(p) for p in ("/proc/1/mem", "/proc/1/environ", "/proc/1/fd")}))
"""
    seen = await run(api, sbx, code)
    assert all(outcome.startswith("refused:") for outcome in seen.values()), seen
