"""Escape attempts: code in sandbox A tries to cross a line, and must fail.

Each test runs code inside sandbox A and asserts on what that code observed and printed.
The same file runs on the fallback (``HOPX_LOCAL_ISOLATION=none``): the checks that only a
box can pass are skipped there with the reason; the others (tokens, confinement of the
API's paths) run on both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Api, Sandbox, eventually, marker, outside_address, pids_with_arg

pytestmark = pytest.mark.anyio

#: Read at import, before the suite's fixtures clear the HOPX_* variables of each test.
FORCED_OFF = os.environ.get("HOPX_LOCAL_ISOLATION", "").strip().lower() == "none"
NO_BOX = "needs the bubblewrap box: without it code runs as the server's user, sees what it sees"


@pytest.fixture
def boxed(backend: LocalBackend) -> bool:
    return backend.isolation == "bubblewrap"


def need_box(boxed: bool) -> None:
    if not boxed:
        pytest.skip(NO_BOX)


@pytest.fixture
async def other(api: Api) -> Any:
    sandbox = await api.create()
    yield sandbox
    await api.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")


async def observe(api: Api, sbx: Sandbox, code: str) -> Any:
    """Run Python ``code`` in ``sbx``; it prints one JSON line: what it saw."""
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 60})
    assert answer.status == 200, answer.body
    lines = answer.body["stdout"].strip().splitlines()
    assert lines, answer.body
    return json.loads(lines[-1])


TRY_READ = """
import json, os
def attempt(path):
    try:
        if os.path.isdir(path):
            return "listed:" + ",".join(sorted(os.listdir(path))[:5])
        with open(path, "rb") as f:
            return "read:" + f.read(16).hex()
    except OSError as exc:
        return "refused:" + type(exc).__name__
"""


async def test_health_advertises_the_isolation(api: Api, backend: LocalBackend) -> None:
    health = await api.raw("GET", backend.base_url + "/health")
    assert health.body["isolation"] == backend.isolation
    assert backend.isolation in ("bubblewrap", "none")
    if FORCED_OFF:
        assert backend.isolation == "none"


async def test_state_dir_and_token_secret_out_of_reach(
    api: Api, sbx: Sandbox, backend: LocalBackend, boxed: bool
) -> None:
    need_box(boxed)
    state = backend.state_dir
    assert state is not None
    with sqlite3.connect(state / "hopx-local.sqlite3") as db:
        secret = db.execute("SELECT value FROM meta WHERE key = 'token_secret'").fetchone()[0]
    paths = [
        str(state / "hopx-local.sqlite3"),
        str(state),
        str(state / "sandboxes"),
        "/workspace/../../../hopx-local.sqlite3",
        os.path.expanduser("~/../../../hopx-local.sqlite3"),
    ]
    code = (
        TRY_READ
        + f"""
found = []
for root in ("/workspace", "/tmp", "/run", {str(state)!r}):
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    if {secret!r}.encode() in f.read():
                        found.append(os.path.join(dirpath, name))
            except OSError:
                pass
print(json.dumps({{"attempts": {{p: attempt(p) for p in {paths!r}}}, "secret_in": found}}))
"""
    )
    seen = await observe(api, sbx, code)
    for path, outcome in seen["attempts"].items():
        # The state dir exists in the box only as an empty mount point.
        assert outcome in ("refused:FileNotFoundError", "listed:"), (path, outcome)
    assert seen["secret_in"] == []


async def test_server_is_invisible(
    api: Api, sbx: Sandbox, backend: LocalBackend, boxed: bool
) -> None:
    need_box(boxed)
    server = os.getpid()  # the backend runs in a thread of this process
    code = (
        TRY_READ
        + f"""
cmdlines = {{}}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{{entry}}/cmdline", "rb") as f:
                cmdlines[entry] = f.read().replace(b"\\0", b" ").decode("utf-8", "replace")
        except OSError:
            pass
print(json.dumps({{
    "cmdline": attempt("/proc/{server}/cmdline"),
    "environ": attempt("/proc/{server}/environ"),
    "pids": cmdlines,
    "ppid": os.getppid(),
}}))
"""
    )
    seen = await observe(api, sbx, code)
    for outcome in (seen["cmdline"], seen["environ"]):
        assert outcome.startswith("refused:"), outcome
    visible = " ".join(seen["pids"].values())
    assert backend.api_key not in visible
    assert "pytest" not in visible
    assert str(server) not in seen["pids"]
    assert all(int(pid) < 100 for pid in seen["pids"])  # a fresh PID namespace
    assert seen["ppid"] < 100


async def test_other_sandbox_workspace_out_of_reach(
    api: Api, sbx: Sandbox, other: Sandbox, backend: LocalBackend, boxed: bool
) -> None:
    need_box(boxed)
    wrote = await api.agent(
        other, "POST", "/commands/run", json={"command": "echo b-secret > /workspace/b.txt"}
    )
    assert wrote.body["exit_code"] == 0
    assert backend.state_dir is not None
    b_workspace = backend.state_dir / "sandboxes" / other.id / "workspace"
    assert (b_workspace / "b.txt").read_text() == "b-secret\n"
    code = (
        TRY_READ
        + f"""
def write(path):
    try:
        with open(path, "w") as f:
            f.write("from A")
        return "wrote"
    except OSError as exc:
        return "refused:" + type(exc).__name__
print(json.dumps({{
    "read": attempt({str(b_workspace / "b.txt")!r}),
    "list": attempt({str(b_workspace)!r}),
    "siblings": attempt("/workspace/.."),
    "sandboxes": attempt({str(backend.state_dir / "sandboxes")!r}),
    "write": write({str(b_workspace / "from-a.txt")!r}),
}}))
"""
    )
    seen = await observe(api, sbx, code)
    assert seen["read"].startswith("refused:"), seen
    assert seen["list"].startswith("refused:"), seen
    assert seen["write"].startswith("refused:"), seen
    assert seen["sandboxes"] in ("refused:FileNotFoundError", "listed:"), seen
    assert other.id not in seen["siblings"]
    assert not (b_workspace / "from-a.txt").exists()
    assert (b_workspace / "b.txt").read_text() == "b-secret\n"


async def test_cannot_signal_other_sandbox_or_server(
    api: Api, sbx: Sandbox, other: Sandbox, boxed: bool
) -> None:
    need_box(boxed)
    b_arg = marker()
    started = await api.command(other, f"sleep 60 {b_arg}")
    assert await eventually(lambda: bool(pids_with_arg(b_arg)))
    (b_pid,) = pids_with_arg(b_arg)
    code = f"""
import json, os, signal
def hit(pid, sig):
    try:
        os.kill(pid, sig)
        return "sent"
    except OSError as exc:
        return "refused:" + type(exc).__name__
print(json.dumps({{"b": hit({b_pid}, signal.SIGKILL), "server": hit({os.getpid()}, 0)}}))
"""
    seen = await observe(api, sbx, code)
    assert seen["b"] == "refused:ProcessLookupError"
    assert seen["server"] == "refused:ProcessLookupError"
    # kill(-1) from inside only reaches the caller's own box: B's process survives it.
    everything = await api.agent(
        sbx, "POST", "/commands/run", json={"command": "kill -9 -1; echo still-here"}
    )
    assert everything.status == 200
    assert pids_with_arg(b_arg) == [b_pid]
    await api.agent(other, "POST", f"/execute/kill/{started['process_id']}")


async def test_tokens_bind_one_sandbox(api: Api, sbx: Sandbox, other: Sandbox) -> None:
    # A's token on B's agent.
    cross = await api.agent(Sandbox({**other.data, "auth_token": sbx.token}), "GET", "/health")
    cross.expect_error(403, "FORBIDDEN")
    # A token forged from A's: B's id in the payload, A's signature.
    prefix, payload, signature = sbx.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sid"] = other.id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    forged = f"{prefix}.{forged_payload}.{signature}"
    answer = await api.agent(Sandbox({**other.data, "auth_token": forged}), "GET", "/health")
    answer.expect_error(401, "INVALID_TOKEN")
    # Code in A finds no token or key in its environment.
    seen = await observe(api, sbx, "import json, os; print(json.dumps(dict(os.environ)))")
    values = " ".join(seen.values())
    assert sbx.token not in values
    assert api.api_key not in values


ESCAPEE = """
import os, sys, time
arg = sys.argv[1] if len(sys.argv) > 1 else {arg!r}
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a grandchild in its own session, orphaned at once
        os.execvp("sleep", ["sleep", "60", arg])
    os._exit(0)
print("forked", flush=True)
time.sleep(60)
"""


async def _escapee(api: Api, sbx: Sandbox, **body: Any) -> tuple[str, dict[str, Any]]:
    arg = marker()
    started = await api.background(sbx, ESCAPEE.format(arg=arg), **body)
    assert await eventually(lambda: bool(pids_with_arg(arg)))
    return arg, started


async def test_setsid_escapee_is_a_daemon_of_the_box(api: Api, sbx: Sandbox, boxed: bool) -> None:
    # One box per sandbox: what a process leaves in another session lives on after the
    # process's timeout or kill (only its process group ends), as on a VM.
    need_box(boxed)
    arg, started = await _escapee(api, sbx, timeout=1)
    done = await api.wait_done(sbx, started["process_id"])
    assert done["status"] == "timeout"
    assert "forked" in done["stdout"]
    other_arg, other = await _escapee(api, sbx)
    killed = await api.agent(sbx, "POST", f"/execute/kill/{other['process_id']}")
    assert killed.status == 200
    assert len(pids_with_arg(arg)) == 1
    assert len(pids_with_arg(other_arg)) == 1
    answer = await api.cp("POST", f"/v1/sandboxes/{sbx.id}/kill")
    assert answer.status == 200
    assert await eventually(lambda: not pids_with_arg(arg) and not pids_with_arg(other_arg))


async def test_setsid_escapee_ends_with_sandbox_kill(api: Api, boxed: bool) -> None:
    need_box(boxed)
    doomed = await api.create()
    arg, _ = await _escapee(api, doomed)
    answer = await api.cp("POST", f"/v1/sandboxes/{doomed.id}/kill")
    assert answer.status == 200
    assert pids_with_arg(arg) == []


async def test_not_root_outside_the_box(api: Api, sbx: Sandbox, boxed: bool) -> None:
    if not boxed and os.geteuid() == 0:
        pytest.skip(NO_BOX + " (here: root)")
    arg = marker()
    code = (
        "import json, os, subprocess\n"
        f"p = subprocess.Popen(['sleep', '60', {arg!r}])\n"
        "uid_map = open('/proc/self/uid_map').read().split()\n"
        "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'map': uid_map}))\n"
        "p.wait()\n"
    )
    started = await api.background(sbx, code)
    assert await eventually(lambda: bool(pids_with_arg(arg)))
    (pid,) = pids_with_arg(arg)
    status = Path(f"/proc/{pid}/status").read_text()
    host_uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in host_uids  # real, effective, saved, filesystem: none is root
    proc = await api.process(sbx, started["process_id"])
    seen = json.loads(proc["stdout"].strip().splitlines()[0])
    assert seen["uid"] != 0 and seen["euid"] != 0
    if boxed and os.geteuid() == 0:  # a host uid of its own (tests/local/test_uids.py)
        assert seen["uid"] >= 65536 and host_uids[0] == str(seen["uid"])
    elif boxed:
        assert seen["uid"] == 65534
    await api.agent(sbx, "POST", f"/execute/kill/{started['process_id']}")


async def test_state_files_are_owner_only(api: Api, sbx: Sandbox, backend: LocalBackend) -> None:
    done = await api.background(sbx, "print('x')")
    await api.wait_done(sbx, done["process_id"])
    state = backend.state_dir
    assert state is not None
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / "hopx-local.sqlite3").stat().st_mode & 0o777) == 0o600
    outputs = list((state / "sandboxes" / sbx.id / "output").iterdir())
    assert outputs
    assert {path.stat().st_mode & 0o777 for path in outputs} == {0o600}


async def test_no_network_without_internet_access(
    api: Api, backend: LocalBackend, boxed: bool
) -> None:
    need_box(boxed)
    health = await api.raw("GET", api.base_url + "/health")
    port = int(backend.base_url.rsplit(":", 1)[1])
    host, server = "127.0.0.1", None
    if health.body["sandbox_limits"]["network"]["value"] == "user":
        # A box of its own network: the host's loopback is out of reach (test_network.py),
        # the way out is through the host's other addresses.
        host = outside_address()
        server = await asyncio.start_server(lambda _r, w: w.close(), host, 0)
        port = server.sockets[0].getsockname()[1]
    code = f"""
import json, socket
try:
    socket.create_connection(({host!r}, {port}), timeout=5).close()
    seen = "connected"
except OSError as exc:
    seen = "refused:" + type(exc).__name__
print(json.dumps(seen))
"""
    online = await api.create()
    offline = await api.create(internet_access=False)
    try:
        assert await observe(api, online, code) == "connected"
        assert (await observe(api, offline, code)).startswith("refused:")
    finally:
        if server is not None:
            server.close()
        for sandbox in (online, offline):
            await api.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")


async def test_isolation_off_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="isolation"):
        LocalBackend(isolation="sometimes")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="hopx_async.local"):
        async with LocalBackend(isolation="none") as plain, aiohttp.ClientSession() as session:
            assert plain.isolation == "none"
            async with session.get(plain.base_url + "/health") as resp:
                assert (await resp.json())["isolation"] == "none"
    loud = [r for r in caplog.records if "NOT ISOLATED" in r.getMessage()]
    assert len(loud) == 1
    assert loud[0].levelno == logging.WARNING
    assert "turned off" in loud[0].getMessage()
