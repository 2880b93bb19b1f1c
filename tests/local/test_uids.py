"""A host uid per sandbox (a root server with boxes): the attacks that a shared uid lets through.

Code in two sandboxes compares what it runs as; the files API's new files belong to the
sandbox's own uid; sandbox A tries to read a 0600 file of sandbox B; a fork flood in A,
stopped by ``RLIMIT_NPROC``, must not stop B; a restart keeps each sandbox's uid, and a
deleted sandbox's uid is given out again (never while a host process still runs as it).
An unprivileged server has no other host uid to give (its boxes run as 65534 in a user
namespace): these tests skip there, as without a box.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.state.uids import UID_RANGE_ENV, UidRange

from .helpers import Api, Sandbox, eventually

pytestmark = pytest.mark.anyio

#: Read at import, before the suite's fixtures clear the HOPX_* variables of each test.
FORCED_OFF = os.environ.get("HOPX_LOCAL_ISOLATION", "").strip().lower() == "none"
DEFAULT = UidRange()
#: What code in a sandbox reports about itself.
WHOAMI = (
    "import json, os, resource\n"
    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'euid': os.geteuid(),"
    " 'groups': os.getgroups(), 'pid': os.getpid(),"
    " 'nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0]}))\n"
)


def need_own_uids(backend: LocalBackend) -> None:
    if backend.isolation != "bubblewrap":
        pytest.skip("a uid per sandbox comes with the bubblewrap box")
    if os.geteuid() != 0:
        pytest.skip("only a root server has host uids to give (else 65534 in a user namespace)")


async def run(api: Api, sbx: Sandbox, code: str) -> Any:
    """Run Python ``code`` in ``sbx``; it prints one JSON line last."""
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 60})
    assert answer.status == 200, answer.body
    assert answer.body.get("stdout"), answer.body
    return json.loads(answer.body["stdout"].strip().splitlines()[-1])


@pytest.fixture
async def own(tmp_path: Path) -> AsyncIterator[tuple[LocalBackend, Api]]:
    """A backend of the test's own, on ``tmp_path`` (its environment set by the test first)."""
    isolation: Any = "none" if FORCED_OFF else "auto"
    async with (
        LocalBackend(tmp_path / "state", isolation=isolation) as server,
        aiohttp.ClientSession() as session,
    ):
        need_own_uids(server)
        yield server, Api(session, server.base_url, server.api_key)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host directory every box sees (read-only): ``/var/tmp`` is bound into each."""
    if not os.path.isdir("/var/tmp"):
        pytest.skip("no /var/tmp here to share between boxes")
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="hopx-uids-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_two_sandboxes_run_as_host_uids_of_their_own(
    api: Api, backend: LocalBackend, sbx: Sandbox
) -> None:
    need_own_uids(backend)
    other = await api.create()
    try:
        seen = [await run(api, box, WHOAMI) for box in (sbx, other)]
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")
    uids = [s["uid"] for s in seen]
    assert uids[0] != uids[1]
    for s in seen:
        assert s["uid"] == s["euid"] == s["gid"] and s["groups"] == []
        assert s["uid"] not in (0, os.getuid(), 65534)
        assert DEFAULT.start <= s["uid"] <= DEFAULT.end
        # The process limit holds the sandbox's processes, also beside a pids cgroup.
        assert s["nproc"] == 1024


async def test_files_api_gives_new_files_to_the_sandboxs_uid(
    api: Api, backend: LocalBackend, sbx: Sandbox
) -> None:
    need_own_uids(backend)
    uid = (await run(api, sbx, WHOAMI))["uid"]
    assert DEFAULT.start <= uid <= DEFAULT.end
    wrote = await api.agent(
        sbx,
        "POST",
        "/files/write",
        json={"path": "/workspace/new/dir/private.txt", "content": "mine", "mode": "0600"},
    )
    assert wrote.status == 200, wrote.body
    made = await api.agent(sbx, "POST", "/files/mkdir", json={"path": "made/here"})
    assert made.status == 200, made.body
    form = aiohttp.FormData()
    form.add_field("path", "/workspace/new/up.bin")
    form.add_field("file", b"\x00up", filename="up.bin")
    uploaded = await api.agent(sbx, "POST", "/files/upload", data=form)
    assert uploaded.status == 200, uploaded.body
    code = (
        "import json, os\n"
        "paths = ['/workspace', '/tmp', 'new', 'new/dir', 'new/dir/private.txt', 'made',"
        " 'made/here', 'new/up.bin']\n"
        "owners = {p: [os.stat(p).st_uid, os.stat(p).st_gid] for p in paths}\n"
        "text = open('new/dir/private.txt').read()\n"  # 0600: only its owner reads it
        "open('new/dir/private.txt', 'a').write('!')\n"
        "os.rmdir('made/here')\n"
        "print(json.dumps({'owners': owners, 'text': text}))\n"
    )
    seen = await run(api, sbx, code)
    assert seen["text"] == "mine"
    # /tmp is the box's own tmpfs (mode 1777, root's); everything else is the sandbox's.
    assert seen["owners"].pop("/tmp") == [0, 0]
    assert set(map(tuple, seen["owners"].values())) == {(uid, uid)}


async def test_a_sandbox_cannot_read_another_sandboxs_private_file(
    api: Api, backend: LocalBackend, sbx: Sandbox, shared_dir: Path
) -> None:
    need_own_uids(backend)
    victim = await api.create()
    try:
        await run(
            api,
            victim,
            "import json, os\n"
            "fd = os.open('secret.txt', os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "os.write(fd, b'top secret')\n"
            "print(json.dumps({}))\n",
        )
        assert backend.state_dir is not None
        host_path = backend.state_dir / "sandboxes" / victim.id / "workspace" / "secret.txt"
        # The same file where both boxes can reach it: its owner and mode kept.
        shared = shared_dir / "secret.txt"
        shutil.copy2(host_path, shared)
        info = host_path.stat()
        os.chown(shared, info.st_uid, info.st_gid)
        assert info.st_mode & 0o777 == 0o600
        attempt = (
            "import json\n"
            "seen = {}\n"
            f"for path in ({str(host_path)!r}, {str(shared)!r}):\n"
            "    try:\n"
            "        seen[path] = open(path).read()\n"
            "    except OSError as exc:\n"
            "        seen[path] = type(exc).__name__\n"
            "print(json.dumps(seen))\n"
        )
        by_attacker = await run(api, sbx, attempt)
        by_owner = await run(api, victim, attempt)
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{victim.id}")
    # The host path is out of sight; the shared copy is refused by uid alone.
    assert by_attacker[str(host_path)] == "FileNotFoundError"
    assert by_attacker[str(shared)] == "PermissionError"
    assert by_owner[str(shared)] == "top secret"


FLOOD = """
import os, time
made, refused = 0, 0
while refused < 50:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
    except OSError:
        refused += 1
        time.sleep(0.001)
print(made, refused, flush=True)
time.sleep(60)
"""

SPAWN = """
import json, subprocess
children = [subprocess.Popen(['sleep', '5']) for _ in range(16)]
for child in children:
    child.kill()
    child.wait()
print(json.dumps({'started': len(children)}))
"""


@pytest.fixture
def flood_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPX_LOCAL_CGROUPS", "off")  # the rlimit alone holds the flood
    monkeypatch.setenv("HOPX_LOCAL_MAX_PROCESSES", "64")


async def test_a_fork_flood_in_one_sandbox_leaves_the_other_its_processes(
    flood_env: None, own: tuple[LocalBackend, Api]
) -> None:
    _, api = own
    flooder, neighbour = await api.create(), await api.create()
    started = await api.background(flooder, FLOOD, timeout=120)
    flooded = ""

    async def stopped() -> bool:
        nonlocal flooded
        proc = await api.process(flooder, started["process_id"])
        flooded = proc.get("stdout") or ""
        return bool(flooded.strip()) or proc["status"] != "running"

    for _ in range(600):
        if await stopped():
            break
        await asyncio.sleep(0.05)
    made, refused = (int(n) for n in flooded.split())
    assert refused == 50 and made <= 64  # RLIMIT_NPROC (64 here) stopped it
    # The flood still holds its processes; the neighbour starts its own all the same.
    assert await run(api, neighbour, SPAWN) == {"started": 16}
    killed = await api.cp("POST", f"/v1/sandboxes/{flooder.id}/kill")
    assert killed.status == 200


async def test_a_sandboxs_uid_survives_a_restart(backend: LocalBackend, tmp_path: Path) -> None:
    need_own_uids(backend)
    state = tmp_path / "state"
    async with LocalBackend(state) as first, aiohttp.ClientSession() as session:
        api = Api(session, first.base_url, first.api_key)
        kept, older = await api.create(), await api.create()
        before = (await run(api, kept, WHOAMI))["uid"]
        await run(api, kept, "open('mine.txt', 'w').write('x'); print('{}')")
    # A sandbox made by an older version has no uid recorded (simulated by dropping its
    # entry while the server is down): it keeps 65534.
    record = json.loads((state / "uids.json").read_text())
    assert record["uids"][kept.id] == before
    del record["uids"][older.id]
    (state / "uids.json").write_text(json.dumps(record))
    async with (
        LocalBackend(state, api_key=first.api_key) as second,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, second.base_url, second.api_key)
        kept, older = [await _found(api, box) for box in (kept, older)]
        again = await run(
            api, kept, WHOAMI.replace("print(", "open('mine.txt', 'a').write('y')\nprint(")
        )
        legacy = await run(api, older, WHOAMI)
        for box in (kept, older):  # their uids are claimed until then
            await api.cp("DELETE", f"/v1/sandboxes/{box.id}")
    assert again["uid"] == before
    assert legacy["uid"] == 65534


async def test_a_deleted_sandboxs_uid_is_given_out_again(
    monkeypatch: pytest.MonkeyPatch, backend: LocalBackend, tmp_path: Path
) -> None:
    need_own_uids(backend)
    # A range of two uids no other test (nor an earlier run's state dir) uses.
    spare = 3_000_000 + 2 * secrets.randbelow(500_000)
    monkeypatch.setenv(UID_RANGE_ENV, f"{spare}-{spare + 1}")
    async with LocalBackend(tmp_path / "state") as server, aiohttp.ClientSession() as session:
        api = Api(session, server.base_url, server.api_key)
        first, second = await api.create(), await api.create()
        uids = {(await run(api, box, WHOAMI))["uid"] for box in (first, second)}
        assert uids == {spare, spare + 1}
        full = await api.cp("POST", "/v1/sandboxes", json={"template_name": "code-interpreter"})
        assert UID_RANGE_ENV in full.expect_error(503, "SERVICE_UNAVAILABLE")["error"]
        freed = (await run(api, first, WHOAMI))["uid"]
        deleted = await api.cp("DELETE", f"/v1/sandboxes/{first.id}")
        assert deleted.status in (200, 204)
        # A host process that still runs as the freed uid keeps it from being reused.
        lingering = subprocess.Popen(["sleep", "60"], user=freed, group=freed)
        try:
            assert await eventually(lambda: not _runs_as(freed, but=lingering.pid))
            refused = await api.cp(
                "POST", "/v1/sandboxes", json={"template_name": "code-interpreter"}
            )
            refused.expect_error(503, "SERVICE_UNAVAILABLE")
        finally:
            lingering.kill()
            lingering.wait()
        third = await api.create()
        assert (await run(api, third, WHOAMI))["uid"] == freed
        for box in (second, third):
            await api.cp("DELETE", f"/v1/sandboxes/{box.id}")


async def test_two_servers_on_one_machine_never_share_a_uid(
    monkeypatch: pytest.MonkeyPatch, backend: LocalBackend, tmp_path: Path
) -> None:
    need_own_uids(backend)
    only = 4_000_000 + secrets.randbelow(1_000_000)  # a range of one uid, this test's alone
    monkeypatch.setenv(UID_RANGE_ENV, f"{only}-{only}")
    create = {"template_name": "code-interpreter"}
    async with aiohttp.ClientSession() as session:
        async with LocalBackend(tmp_path / "a") as first:
            api_a = Api(session, first.base_url, first.api_key)
            holder = await api_a.create()
            assert (await run(api_a, holder, WHOAMI))["uid"] == only
        # The first server is stopped, its sandbox kept in its state dir: still its uid.
        async with LocalBackend(tmp_path / "b") as second:
            api_b = Api(session, second.base_url, second.api_key)
            refused = await api_b.cp("POST", "/v1/sandboxes", json=create)
            refused.expect_error(503, "SERVICE_UNAVAILABLE")
        async with LocalBackend(tmp_path / "a", api_key=first.api_key) as first:
            api_a = Api(session, first.base_url, first.api_key)
            assert (await api_a.cp("DELETE", f"/v1/sandboxes/{holder.id}")).status in (200, 204)
        assert await eventually(lambda: not _runs_as(only, but=0))
        async with LocalBackend(tmp_path / "b") as second:
            api_b = Api(session, second.base_url, second.api_key)
            taker = await api_b.create()
            assert (await run(api_b, taker, WHOAMI))["uid"] == only
            await api_b.cp("DELETE", f"/v1/sandboxes/{taker.id}")


async def _found(api: Api, sbx: Sandbox) -> Sandbox:
    """``sbx`` as a restarted server shows it (its agent's new address), with its token."""
    answer = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
    assert answer.status == 200, answer.body
    return Sandbox({**answer.body, "auth_token": sbx.token})


def _runs_as(uid: int, *, but: int) -> bool:
    """Whether a host process other than ``but`` runs as ``uid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == but:
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        line = next((x for x in status.splitlines() if x.startswith("Uid:")), "")
        if str(uid) in line.split()[1:]:
            return True
    return False


@pytest.mark.parametrize("value", ["1000", "5-3", "0-70000", "abc-def", "70000-99999999999"])
async def test_a_bad_uid_range_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv(UID_RANGE_ENV, value)
    with pytest.raises(ValueError, match=UID_RANGE_ENV):
        UidRange.from_env()
    with pytest.raises(ValueError, match=UID_RANGE_ENV):
        async with LocalBackend(tmp_path / "state", isolation="none"):
            pass
