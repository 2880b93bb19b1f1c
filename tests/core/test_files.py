"""``sandbox.files`` and ``sandbox.env`` of the async SDK, against the local backend."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hopx_async import (
    AsyncHopx,
    AsyncSandbox,
    FileInfo,
    NotFoundError,
    PermissionDeniedError,
    SandboxNotFoundError,
    ValidationError,
)
from hopx_async._files import CHUNK

from .proxy import Fault, FaultProxy
from .test_validation_limits import offline_sandbox

pytestmark = pytest.mark.anyio


class CountingReader(io.RawIOBase):
    """A binary source that records every read size and is never read whole."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.reads: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        take = self.left if n < 0 else min(n, self.left)
        self.left -= take
        return b"z" * take


class CountingWriter(io.RawIOBase):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        return len(data)


async def test_text_and_bytes_round_trip(sandbox: AsyncSandbox) -> None:
    await sandbox.files.write("/workspace/notes/a.txt", "héllo\n")
    assert await sandbox.files.read("notes/a.txt") == "héllo\n"
    assert await sandbox.files.read_bytes("/workspace/notes/a.txt") == "héllo\n".encode()
    blob = bytes(range(256))
    await sandbox.files.write("blob.bin", blob)
    assert await sandbox.files.read_bytes("blob.bin") == blob
    await sandbox.files.write("run.sh", "echo ran\n", mode=0o755)
    assert (await sandbox.commands.run("./run.sh")).stdout == "ran\n"
    written = await sandbox.commands.run("cat notes/a.txt")
    assert written.stdout == "héllo\n", "what the SDK wrote is what the code sees"


async def test_list_exists_mkdir_remove(sandbox: AsyncSandbox) -> None:
    await sandbox.files.mkdir("/workspace/data/raw")
    await sandbox.files.write("data/x.csv", "a,b\n")
    entries = await sandbox.files.list("/workspace/data")
    assert all(isinstance(e, FileInfo) for e in entries)
    assert [(e.name, e.is_directory, e.is_file) for e in entries] == [
        ("raw", True, False),
        ("x.csv", False, True),
    ]
    csv = entries[1]
    assert csv.path == "/workspace/data/x.csv"
    assert csv.size == 4
    assert csv.permissions == "-rw-r--r--"
    assert csv.modified_time is not None
    assert csv.modified_time.tzinfo is not None
    assert await sandbox.files.exists("data/x.csv") is True
    assert await sandbox.files.exists("data/none") is False
    await sandbox.files.remove("/workspace/data")
    assert await sandbox.files.exists("data") is False
    assert "data" not in {e.name for e in await sandbox.files.list()}


async def test_errors_are_typed(sandbox: AsyncSandbox) -> None:
    with pytest.raises(NotFoundError) as missing:
        await sandbox.files.read("missing.txt")
    assert not isinstance(missing.value, SandboxNotFoundError), "the sandbox is fine"
    assert missing.value.code == "FILE_NOT_FOUND"
    with pytest.raises(PermissionDeniedError) as outside:
        await sandbox.files.read("/etc/passwd")
    assert outside.value.code == "PATH_FORBIDDEN"
    with pytest.raises(NotFoundError):
        await sandbox.files.download("missing.bin", io.BytesIO())


async def test_upload_and_download_stream_in_chunks(sandbox: AsyncSandbox, tmp_path: Path) -> None:
    size = 3 * CHUNK + 123
    source = CountingReader(size)
    assert await sandbox.files.upload(source, "/workspace/big.bin") == size
    assert max(source.reads) <= CHUNK, "the source is read in chunks, never whole"
    assert (await sandbox.commands.run("wc -c < big.bin")).stdout.strip() == str(size)

    sink = CountingWriter()
    assert await sandbox.files.download("big.bin", sink) == size
    assert sum(sink.sizes) == size
    assert max(sink.sizes) <= CHUNK, "the answer is written as it arrives"

    local = tmp_path / "in.dat"
    local.write_bytes(b"\x00\x01data" * 1000)
    assert await sandbox.files.upload(local, "sub/in.dat") == local.stat().st_size
    target = tmp_path / "out.dat"
    target.write_bytes(b"old")
    assert await sandbox.files.download("/workspace/sub/in.dat", str(target)) == 6000
    assert target.read_bytes() == local.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.dat", "out.dat"], "no part file"


async def test_a_failed_download_leaves_the_destination_alone(
    sandbox: AsyncSandbox, tmp_path: Path
) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("mine")
    with pytest.raises(NotFoundError):
        await sandbox.files.download("nothing-here", target)
    assert target.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


async def test_an_upload_is_resent_once_after_a_token_refresh(
    proxied: AsyncHopx, proxy: FaultProxy, tmp_path: Path
) -> None:
    # A fault: the real server would need a token expiring between two requests.
    expired = {"error": "invalid token: token expired", "code": "INVALID_TOKEN"}
    async with proxied.sandboxes.create("code-interpreter") as sandbox:
        await sandbox.files.exists("warm-up")
        proxy.inject(Fault("POST", r"/files/upload$", 401, expired, times=1))
        data = io.BytesIO(b"0123456789" * 100)
        data.seek(5)
        assert await sandbox.files.upload(data, "resent.bin") == 995
        assert proxy.count("POST", "/files/upload") == 2
        assert await sandbox.files.read("resent.bin") == ("0123456789" * 100)[5:]


async def test_env(sandbox: AsyncSandbox) -> None:
    base = await sandbox.env.get_all()
    assert {"PATH", "HOME"} <= set(base)
    await sandbox.env.update({"DEBUG": "1", "API_TOKEN": "s3cret"})
    assert await sandbox.env.get("DEBUG") == "1"
    assert await sandbox.env.get("API_TOKEN") == "***MASKED***"
    seen = await sandbox.commands.run("echo $DEBUG $API_TOKEN")
    assert seen.stdout == "1 s3cret\n"
    await sandbox.env.delete("DEBUG")
    await sandbox.env.delete("NEVER_SET")
    assert await sandbox.env.get("DEBUG") is None
    assert (await sandbox.commands.run("echo $API_TOKEN")).stdout == "s3cret\n"
    await sandbox.env.set({"ONLY": "this"})
    after = await sandbox.env.get_all()
    assert after["ONLY"] == "this"
    assert "API_TOKEN" not in after
    assert set(after) - {"ONLY"} == set(base), "the base environment stays"


Call = Callable[[AsyncSandbox], Awaitable[Any]]

CASES: list[tuple[str, Call]] = [
    ("path", lambda s: s.files.read("")),
    ("path", lambda s: s.files.read("a\x00b")),
    ("path", lambda s: s.files.read_bytes(3)),  # type: ignore[arg-type]
    ("path", lambda s: s.files.write("", "x")),
    ("content", lambda s: s.files.write("a", 3)),  # type: ignore[arg-type]
    ("mode", lambda s: s.files.write("a", "x", mode="0999")),
    ("mode", lambda s: s.files.write("a", "x", mode=0o4755)),
    ("path", lambda s: s.files.list("")),
    ("path", lambda s: s.files.exists(None)),  # type: ignore[arg-type]
    ("path", lambda s: s.files.remove("")),
    ("path", lambda s: s.files.mkdir("")),
    ("remote_path", lambda s: s.files.upload(io.BytesIO(b"x"), "")),
    ("source", lambda s: s.files.upload(42, "x")),  # type: ignore[arg-type]
    ("source", lambda s: s.files.upload("/no/such/local/file", "x")),
    ("remote_path", lambda s: s.files.download("", io.BytesIO())),
    ("destination", lambda s: s.files.download("x", 42)),  # type: ignore[arg-type]
    ("destination", lambda s: s.files.download("x", "/no/such/dir/file")),
    ("name", lambda s: s.env.get("")),
    ("name", lambda s: s.env.delete("")),
    ("variables", lambda s: s.env.set({"A B": "v"})),
    ("variables", lambda s: s.env.update({"A": 1})),  # type: ignore[dict-item]
]


@pytest.mark.parametrize(("argument", "call"), CASES)
async def test_refused_before_io(argument: str, call: Call, proxy: FaultProxy) -> None:
    sandbox = offline_sandbox(proxy.url)
    with pytest.raises(ValidationError) as err:
        await call(sandbox)
    assert err.value.argument == argument
    assert not proxy.counts, "no request may be sent"
