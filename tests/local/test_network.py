"""Network separation of sandboxes, tried as attacks from code in the sandboxes.

In ``user`` mode (``HOPX_LOCAL_NETWORK=user``: a network namespace per box, ``slirp4netns``
for internet access) sandbox B cannot reach sandbox A's abstract Unix socket, and no
sandbox reaches a listener on the host's loopback (neither at 127.0.0.1 nor through the
gateway 10.0.2.2), while a listener on the host's non-loopback address is reachable (the way
out works). The fallback (no ``slirp4netns``: the server is started with a PATH without it)
runs in ``host`` mode, where both are reachable, as the docs say. A sandbox without internet
access has only ``lo`` in both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.runtime.network import GATEWAY, resolv_conf_for

from .helpers import Api, Sandbox, marker, outside_address

pytestmark = pytest.mark.anyio


def _started(env: dict[str, str]) -> Iterator[LocalBackend]:
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("HOPX_")]:
            patch.delenv(name)
        patch.setenv("HOPX_LOCAL_ISOLATION", "bubblewrap")
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            running = LocalBackend.in_thread(isolation="bubblewrap")
            backend = running.__enter__()
        except RuntimeError as exc:
            pytest.skip(f"no box or no user-mode networking here: {exc}")
        patch.undo()
    try:
        yield backend
    finally:
        running.__exit__(None, None, None)


@pytest.fixture(scope="module")
def user_backend() -> Iterator[LocalBackend]:
    yield from _started({"HOPX_LOCAL_NETWORK": "user"})


@pytest.fixture(scope="module")
def bin_without_slirp4netns() -> Iterator[Path]:
    """A PATH with what a root server needs of it but slirp4netns (under /var/tmp, which
    boxes see: the box runs setpriv by that path)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="hopx-bin-", dir="/var/tmp"))
    try:
        for tool in ("setpriv", "sh", "bash"):
            found = shutil.which(tool)
            if found:
                (bin_dir / tool).symlink_to(os.path.realpath(found))
        yield bin_dir
    finally:
        shutil.rmtree(bin_dir)


@pytest.fixture(scope="module")
def fallback_backend(bin_without_slirp4netns: Path) -> Iterator[LocalBackend]:
    """A server on a machine without slirp4netns."""
    yield from _started({"HOPX_LOCAL_NETWORK": "auto", "PATH": str(bin_without_slirp4netns)})


async def _api(backend: LocalBackend) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, backend.base_url, backend.api_key)


@pytest.fixture
async def user_api(user_backend: LocalBackend) -> AsyncIterator[Api]:
    async for api in _api(user_backend):
        yield api


@pytest.fixture
async def host_api(fallback_backend: LocalBackend) -> AsyncIterator[Api]:
    async for api in _api(fallback_backend):
        yield api


async def _network_advert(api: Api) -> dict[str, Any]:
    answer = await api.cp("GET", "/health")
    assert answer.status == 200, answer.body
    return dict(answer.body["sandbox_limits"]["network"])


async def _run(api: Api, sbx: Sandbox, code: str) -> Any:
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 60})
    assert answer.status == 200, answer.body
    lines = answer.body["stdout"].strip().splitlines()
    assert lines, answer.body
    return json.loads(lines[-1])


CONNECT_TCP = """
import json, socket
seen = {{}}
for host in {hosts!r}:
    try:
        with socket.create_connection((host, {port}), timeout=5) as s:
            s.sendall(b"from-the-sandbox")
        seen[host] = "connected"
    except OSError as exc:
        seen[host] = type(exc).__name__
print(json.dumps(seen))
"""

LISTEN_ABSTRACT = """
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0{name}")
s.listen(8)
time.sleep(120)  # {marker}
"""

CONNECT_ABSTRACT = """
import json, socket, time
deadline = time.monotonic() + {wait}
while True:
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\\0{name}")
        seen = "connected"
    except OSError as exc:
        seen = type(exc).__name__
    if seen == "connected" or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(json.dumps(seen))
"""


class _Listener:
    """A TCP listener of the test on the host: what reached it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def open(self, host: str) -> int:
        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.received.append(await reader.read(100))
            writer.close()

        self.server = await asyncio.start_server(take, host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _abstract_socket_attack(api: Api) -> tuple[str, str]:
    """Sandbox A listens on an abstract socket; (A's own connect, B's connect)."""
    name = f"hopx-test-{marker()}"
    a, b = await api.create(), await api.create()
    try:
        await api.background(a, LISTEN_ABSTRACT.format(name=name, marker=marker()))
        own = await _run(api, a, CONNECT_ABSTRACT.format(name=name, wait=15))
        other = await _run(api, b, CONNECT_ABSTRACT.format(name=name, wait=0))
        return own, other
    finally:
        for sandbox in (a, b):
            await api.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")


async def _host_loopback_attack(api: Api) -> tuple[dict[str, str], list[bytes]]:
    listener = _Listener()
    port = await listener.open("127.0.0.1")
    sbx = await api.create()
    try:
        code = CONNECT_TCP.format(hosts=["127.0.0.1", GATEWAY], port=port)
        return await _run(api, sbx, code), listener.received
    finally:
        listener.close()
        await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")


# -- user mode ------------------------------------------------------------------------------


async def test_user_mode_is_advertised(user_api: Api) -> None:
    assert await _network_advert(user_api) == {"value": "user", "by": "slirp4netns"}


async def test_another_sandboxs_abstract_socket_is_out_of_reach(user_api: Api) -> None:
    own, other = await _abstract_socket_attack(user_api)
    assert own == "connected"  # the socket is there, for A's own processes
    assert other == "ConnectionRefusedError"  # B's namespace has no such name


async def test_host_loopback_is_out_of_reach(user_api: Api) -> None:
    seen, received = await _host_loopback_attack(user_api)
    assert seen["127.0.0.1"] != "connected", seen  # the box's own loopback
    assert seen[GATEWAY] != "connected", seen  # slirp4netns --disable-host-loopback
    assert received == []


async def test_the_host_outside_loopback_is_reachable(user_api: Api) -> None:
    address = outside_address()
    listener = _Listener()
    port = await listener.open(address)
    sbx = await user_api.create()
    try:
        seen = await _run(user_api, sbx, CONNECT_TCP.format(hosts=[address], port=port))
        assert seen == {address: "connected"}
        assert listener.received == [b"from-the-sandbox"]
    finally:
        listener.close()
        await user_api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")


INTERFACES = """
import json, socket
print(json.dumps(sorted(name for _, name in socket.if_nameindex())))
"""

NAMESERVERS = """
import json
lines = open("/etc/resolv.conf").read().splitlines()
print(json.dumps([l.split()[1] for l in lines if l.startswith("nameserver")]))
"""


async def test_interfaces_and_resolver_of_each_box(user_api: Api) -> None:
    online = await user_api.create()
    offline = await user_api.create(internet_access=False)
    try:
        assert await _run(user_api, offline, INTERFACES) == ["lo"]
        assert await _run(user_api, online, INTERFACES) == ["lo", "tap0"]
        servers = await _run(user_api, online, NAMESERVERS)
        assert servers  # and none on the host's loopback, out of the box's reach
        assert not [s for s in servers if s.startswith("127.") or s == "::1"], servers
    finally:
        for sandbox in (online, offline):
            await user_api.cp("DELETE", f"/v1/sandboxes/{sandbox.id}")


async def test_the_tool_ends_with_the_box(user_api: Api, user_backend: LocalBackend) -> None:
    sbx = await user_api.create()
    await _run(user_api, sbx, INTERFACES)  # the box (and its slirp4netns) is made
    assert _tools(sbx.id)
    await user_api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")
    for _ in range(100):
        if not _tagged(sbx.id):
            break
        await asyncio.sleep(0.1)
    assert _tagged(sbx.id) == []


def _tools(sandbox_id: str) -> list[int]:
    """The sandbox's live slirp4netns processes."""
    return [
        p for p in _tagged(sandbox_id) if Path(f"/proc/{p}/exe").resolve().name == "slirp4netns"
    ]


def _tagged(sandbox_id: str) -> list[int]:
    """Live processes carrying the sandbox's box tag."""
    needle = f"HOPX_LOCAL_BOX={sandbox_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry))
    return found


# -- the fallback: host mode ----------------------------------------------------------------


async def test_without_slirp4netns_the_fallback_is_host_mode(host_api: Api) -> None:
    advert = await _network_advert(host_api)
    assert advert == {"value": "host", "by": None}


async def test_host_mode_reaches_what_the_docs_say(host_api: Api) -> None:
    seen, received = await _host_loopback_attack(host_api)
    assert seen["127.0.0.1"] == "connected"  # the host's loopback services
    assert received == [b"from-the-sandbox"]
    own, other = await _abstract_socket_attack(host_api)
    assert (own, other) == ("connected", "connected")  # one namespace: shared names
    offline = await host_api.create(internet_access=False)
    try:
        assert await _run(host_api, offline, INTERFACES) == ["lo"]
    finally:
        await host_api.cp("DELETE", f"/v1/sandboxes/{offline.id}")


# -- the switch -----------------------------------------------------------------------------


async def test_a_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPX_LOCAL_NETWORK", "sometimes")
    with pytest.raises(ValueError, match="HOPX_LOCAL_NETWORK must be auto, user or host"):
        async with LocalBackend(isolation="bubblewrap"):
            pass


async def test_user_mode_required_without_the_tool_fails_to_start(
    monkeypatch: pytest.MonkeyPatch, bin_without_slirp4netns: Path
) -> None:
    monkeypatch.setenv("HOPX_LOCAL_NETWORK", "user")
    monkeypatch.setenv("PATH", str(bin_without_slirp4netns))
    with pytest.raises(RuntimeError) as refused:
        async with LocalBackend(isolation="bubblewrap"):
            pass
    if "isolation 'bubblewrap' was required" in str(refused.value):
        pytest.skip(f"no box here: {refused.value}")
    assert "HOPX_LOCAL_NETWORK=user was required but no slirp4netns found" in str(refused.value)


async def test_a_tool_that_fails_fails_the_start_clearly(
    monkeypatch: pytest.MonkeyPatch, bin_without_slirp4netns: Path
) -> None:
    """A slirp4netns that exits at once (a stand-in: a real one fails on demand only on a
    broken machine): each start of a sandbox with internet access answers an error naming it;
    one without internet access needs no slirp4netns and runs."""
    tools = Path(tempfile.mkdtemp(prefix="hopx-bin-", dir="/var/tmp"))
    try:
        for link in bin_without_slirp4netns.iterdir():
            (tools / link.name).symlink_to(link.readlink())
        fake = tools / "slirp4netns"
        fake.write_text("#!/bin/sh\necho 'cannot attach: a stand-in' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("HOPX_LOCAL_NETWORK", "user")
        monkeypatch.setenv("PATH", str(tools))
        await _fails_clearly()
    finally:
        shutil.rmtree(tools)


async def _fails_clearly() -> None:
    try:
        backend = LocalBackend(isolation="bubblewrap")
        await backend.__aenter__()
    except RuntimeError as exc:
        pytest.skip(f"no box here: {exc}")
    try:
        async for api in _api(backend):
            sbx = await api.create()
            for _ in range(2):
                answer = await api.agent(sbx, "POST", "/execute", json={"code": "print(1)"})
                assert answer.status == 200, answer.body  # a start that failed, as documented
                assert answer.body["exit_code"] == 126, answer.body
                assert answer.body["stderr"].startswith("hopx-local: could not start: "), answer
                assert (
                    "no network: slirp4netns did not start: cannot attach: a stand-in"
                    in (answer.body["stderr"])
                )
            offline = await api.create(internet_access=False)
            ran = await api.agent(offline, "POST", "/execute", json={"code": "print(1)"})
            assert ran.status == 200 and ran.body["stdout"] == "1\n", ran.body
    finally:
        await backend.__aexit__(None, None, None)


def test_a_resolver_on_the_host_loopback_is_replaced() -> None:
    assert resolv_conf_for("nameserver 10.255.255.53\n") is None
    assert resolv_conf_for("nameserver 127.0.0.53\noptions edns0\n") == (
        "nameserver 10.0.2.3\noptions edns0\n"
    )


# -- the tool dies with the server ----------------------------------------------------------


async def test_the_tool_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    """SIGKILL of a ``serve`` in user mode: its slirp4netns ends too (the server held its exit
    descriptor), and a restart on the state dir finds nothing of the box left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env.update(HOPX_LOCAL_NETWORK="user", HOPX_LOCAL_ISOLATION="bubblewrap")
    argv = [sys.executable, "-m", "hopx_async.local", "serve", "--state-dir", str(tmp_path)]
    argv += ["--api-key", "network-test-key", "--log-level", "WARNING"]
    log = tmp_path / "server.log"
    with open(log, "a") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.startswith("HOPX_BASE_URL="):
            why = (log.read_text().strip().splitlines() or ["no reason given"])[-1]
            pytest.skip(f"no user-mode networking here: {why}")
        async with aiohttp.ClientSession() as session:
            api = Api(session, first.split("=", 1)[1], "network-test-key")
            sbx = await api.create()
            assert await _run(api, sbx, INTERFACES) == ["lo", "tap0"]
        tools = [
            p for p in _tagged(sbx.id) if Path(f"/proc/{p}/exe").resolve().name == "slirp4netns"
        ]
        assert tools
        proc.kill()
        proc.wait()
        for _ in range(100):
            if not _tagged(sbx.id):
                break
            await asyncio.sleep(0.1)
        assert _tagged(sbx.id) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
