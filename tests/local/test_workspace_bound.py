"""``/workspace`` is bounded by the template's ``disk_gb``: attacks that try to fill the host disk.

The servers here bound a workspace at 16 MiB (``HOPX_LOCAL_SANDBOX_DISK_MB``; the template's
10 GiB would make filling it slow). Where the server is root and has loop devices and
``mkfs.ext4``, each workspace is an ext4 image loop-mounted on it; those tests skip elsewhere.
The fallback (``HOPX_LOCAL_WORKSPACE_IMAGE=off``: the files API's usage check) is tested
everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.runtime import disk
from hopx_async.local.runtime.disk import IMAGE_ENV, mounts_under
from hopx_async.local.runtime.limits import DISK_ENV, SandboxLimits

from .helpers import Api, Sandbox

pytestmark = pytest.mark.anyio

#: Read at import, before the suite's fixtures clear the HOPX_* variables of each test.
FORCED_OFF = os.environ.get("HOPX_LOCAL_ISOLATION", "").strip().lower() == "none"
BOUND_MB = 16
BOUND = BOUND_MB << 20
IMAGES = (
    os.geteuid() == 0
    and os.path.exists("/dev/loop-control")
    and shutil.which("mkfs.ext4") is not None
)
needs_images = pytest.mark.skipif(not IMAGES, reason="no root, loop devices or mkfs.ext4 here")

#: Sandboxed code that writes 64 KiB files until the disk says no: ``files bytes errno`` (paths
#: relative to the workspace, the working directory with or without a box).
FILL = """
import errno, os
n = size = 0
err = None
try:
    while n < 100000:
        with open(f"fill/{n}.bin", "wb") as f:
            f.write(b"x" * 65536)
        n += 1
        size += 65536
except OSError as exc:
    err = exc.errno
print(n, size, err)
"""

DD = "dd if=/dev/zero of=dd.bin bs=1M count=64 2>&1; echo rc=$?"


def _backend(state_dir: Path) -> LocalBackend:
    return LocalBackend(state_dir, isolation="none" if FORCED_OFF else "auto")


@pytest.fixture
def bounded_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISK_ENV, str(BOUND_MB))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def workspace(backend: LocalBackend, sbx: Sandbox) -> Path:
    assert backend.state_dir is not None
    return backend.state_dir / "sandboxes" / sbx.id / "workspace"


def image(backend: LocalBackend, sbx: Sandbox) -> Path:
    return workspace(backend, sbx).parent / "workspace.img"


def is_mount(path: Path) -> bool:
    return path in mounts_under(path.parent)


async def run(api: Api, sbx: Sandbox, code: str, **body: Any) -> dict[str, Any]:
    answer = await api.agent(sbx, "POST", "/execute", json={"code": code, "timeout": 120, **body})
    assert answer.status == 200, answer.body
    return dict(answer.body)


async def fill(api: Api, sbx: Sandbox) -> tuple[int, int, int | None]:
    await api.agent(sbx, "POST", "/files/mkdir", json={"path": "/workspace/fill"})
    out = await run(api, sbx, FILL)
    files, size, err = out["stdout"].split()
    return int(files), int(size), None if err == "None" else int(err)


async def write(api: Api, sbx: Sandbox, path: str, data: bytes) -> Any:
    body = {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}
    raw = io.BytesIO(json.dumps(body).encode())  # streamed: a large body as bytes warns
    headers = {"Content-Type": "application/json"}
    return await api.agent(sbx, "POST", "/files/write", data=raw, headers=headers)


async def read(api: Api, sbx: Sandbox, path: str) -> str:
    answer = await api.agent(sbx, "GET", "/files/read", params={"path": path})
    assert answer.status == 200, answer.body
    return str(answer.body["content"])


async def upload(api: Api, sbx: Sandbox, path: str, data: bytes) -> Any:
    form = aiohttp.FormData()
    form.add_field("path", path)
    form.add_field("file", io.BytesIO(data), filename="blob.bin")
    return await api.agent(sbx, "POST", "/files/upload", data=form)


async def _advertised(api: Api, by: str) -> None:
    """``/health`` (extended, with a box) names the bound and what holds it."""
    health = await api.raw("GET", api.base_url + "/health")
    limits = health.body["sandbox_limits"]
    if limits is not None:  # null without a box
        assert limits["workspace_mb"] == {"value": BOUND_MB, "by": by}


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@needs_images
async def test_sandbox_code_filling_its_workspace_gets_enospc_and_the_host_keeps_the_rest(
    tmp_path: Path, bounded_env: None, session: aiohttp.ClientSession
) -> None:
    async with _backend(tmp_path / "state") as backend:
        api = Api(session, backend.base_url, backend.api_key)
        filler, neighbour = await api.create(), await api.create()
        assert is_mount(workspace(backend, filler))
        await _advertised(api, "image")
        # The image's root belongs to whoever the sandbox's code runs as, no lost+found.
        owner = await run(api, filler, "import os; print(os.getuid(), os.stat('.').st_uid)")
        uid, root_uid = owner["stdout"].split()
        assert uid == root_uid, owner
        assert os.listdir(workspace(backend, filler)) == []
        await run(api, neighbour, "print(0)")  # its box is up
        filling = asyncio.ensure_future(fill(api, filler))
        answered = 0
        while not filling.done():  # the neighbour answers meanwhile
            out = await run(api, neighbour, "print(6 * 7)")
            assert out["stdout"] == "42\n", out
            answered += 1
        files, size, err = await filling
        assert err == 28, (files, size, err)  # ENOSPC
        assert 0 < size <= BOUND
        dd = await api.agent(filler, "POST", "/commands/run", json={"command": DD})
        assert "No space left on device" in str(dd.body), dd.body
        # What landed on the host: the image, sparse, never more than the bound.
        assert allocated(image(backend, filler)) <= BOUND
        # The neighbour still writes, by code and through the files API.
        out = await run(api, neighbour, "open('n.txt', 'w').write('ok'); print('ok')")
        assert out["stdout"] == "ok\n", out
        assert (await write(api, neighbour, "/workspace/m.txt", b"fine")).status == 200
        print(f"\nfilled {files} files ({size} bytes) of {BOUND}; neighbour ran {answered}x")


@needs_images
async def test_a_files_api_write_past_the_bound_is_507_and_the_old_file_survives(
    tmp_path: Path, bounded_env: None, session: aiohttp.ClientSession
) -> None:
    async with _backend(tmp_path / "state") as backend:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        assert (await write(api, sbx, "/workspace/keep.txt", b"the old content")).status == 200
        too_big = os.urandom(BOUND + (1 << 20))
        (await write(api, sbx, "/workspace/keep.txt", too_big)).expect_error(
            507, "INSUFFICIENT_STORAGE"
        )
        assert await read(api, sbx, "/workspace/keep.txt") == "the old content"
        (await upload(api, sbx, "/workspace/keep.txt", too_big)).expect_error(
            507, "INSUFFICIENT_STORAGE"
        )
        assert await read(api, sbx, "/workspace/keep.txt") == "the old content"
        # Filled by code first, a small write past what is left fails the same way.
        await fill(api, sbx)
        (await write(api, sbx, "/workspace/keep.txt", b"y" * (1 << 20))).expect_error(
            507, "INSUFFICIENT_STORAGE"
        )
        assert await read(api, sbx, "/workspace/keep.txt") == "the old content"
        # An upload that fits crosses from the staging directory into the image.
        await run(api, sbx, "import shutil; shutil.rmtree('fill')")
        assert (await upload(api, sbx, "/workspace/up.bin", b"z" * 4096)).status == 200
        assert await read(api, sbx, "/workspace/up.bin") == "z" * 4096


@needs_images
async def test_the_bound_and_the_files_survive_a_restart(
    tmp_path: Path, bounded_env: None, session: aiohttp.ClientSession
) -> None:
    state = tmp_path / "state"
    async with _backend(state) as backend:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        assert (await write(api, sbx, "/workspace/kept.txt", b"still here")).status == 200
        ws = workspace(backend, sbx)
    assert not is_mount(ws)  # unmounted at stop
    # What a crash during a /files/write leaves in the image: the new file not renamed yet,
    # and its note in the staging directory (planted by hand, the image mounted meanwhile).
    subprocess.run(["mount", "-o", "loop", str(ws.parent / "workspace.img"), str(ws)], check=True)
    (ws / ".hopx-write-0123456789abcdef").write_bytes(b"partial")
    (ws.parent / "uploads").mkdir(exist_ok=True)
    (ws.parent / "uploads" / ".write-0123456789abcdef").write_text(".hopx-write-0123456789abcdef")
    subprocess.run(["umount", str(ws)], check=True)
    async with _backend(state) as backend:
        api = Api(session, backend.base_url, backend.api_key)
        assert is_mount(ws)  # mounted again
        got = await api.cp("GET", f"/v1/sandboxes/{sbx.id}")
        assert got.status == 200, got.body
        sbx = Sandbox(got.body)
        assert await read(api, sbx, "/workspace/kept.txt") == "still here"
        assert not (ws / ".hopx-write-0123456789abcdef").exists()  # swept in the image
        files, size, err = await fill(api, sbx)
        assert err == 28 and size <= BOUND, (files, size, err)


@needs_images
async def test_deleting_the_sandbox_unmounts_and_removes_its_image(
    tmp_path: Path, bounded_env: None, session: aiohttp.ClientSession
) -> None:
    async with _backend(tmp_path / "state") as backend:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        await run(api, sbx, "open('a.txt', 'w').write('a')")
        ws, img = workspace(backend, sbx), image(backend, sbx)
        assert is_mount(ws) and img.exists()
        assert (await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")).status == 200
        assert not is_mount(ws)
        assert not img.exists() and not ws.parent.exists()


@needs_images
async def test_a_restart_unmounts_and_sweeps_what_a_gone_sandbox_left_mounted(
    tmp_path: Path, bounded_env: None
) -> None:
    # What a crash between a deletion's commit and its unmount leaves: the image of a
    # sandbox without a record, still mounted (made here by hand: a real server cannot be
    # stopped at that point on demand).
    state = tmp_path / "state"
    async with _backend(state):
        pass
    gone = state / "sandboxes" / "sbx_0123456789abcdef"
    (gone / "workspace").mkdir(parents=True)
    img = gone / "workspace.img"
    with open(img, "wb") as f:
        f.truncate(BOUND)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(gone / "workspace")], check=True)
    (gone / "workspace" / "secret.txt").write_text("left behind")
    assert is_mount(gone / "workspace")
    async with _backend(state):
        assert not is_mount(gone / "workspace")
        assert not gone.exists()
    assert img.exists() is False


async def test_without_the_image_the_files_api_checks_usage(
    tmp_path: Path,
    bounded_env: None,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(IMAGE_ENV, "off")
    async with _backend(tmp_path / "state") as backend:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        assert not is_mount(workspace(backend, sbx))
        assert not image(backend, sbx).exists()
        await _advertised(api, "usage_check")
        assert (await write(api, sbx, "/workspace/keep.txt", b"the old content")).status == 200
        (await write(api, sbx, "/workspace/keep.txt", os.urandom(BOUND + 1))).expect_error(
            507, "INSUFFICIENT_STORAGE"
        )
        chunk = os.urandom(4 << 20)
        written = 0
        for i in range(8):  # 32 MiB in 4 MiB files: the check stops them at the bound
            answer = await write(api, sbx, f"/workspace/part{i}.bin", chunk)
            if answer.status != 200:
                answer.expect_error(507, "INSUFFICIENT_STORAGE")
                break
            written += len(chunk)
        assert 0 < written <= BOUND
        (await upload(api, sbx, "/workspace/keep.txt", chunk)).expect_error(
            507, "INSUFFICIENT_STORAGE"
        )
        assert await read(api, sbx, "/workspace/keep.txt") == "the old content"


async def test_the_switch_and_the_bound_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "maybe")
    with pytest.raises(ValueError, match=IMAGE_ENV):
        async with LocalBackend(isolation="none"):
            pass
    monkeypatch.setenv(DISK_ENV, "lots")
    assert SandboxLimits.from_template().disk_mb == 10 * 1024  # the template's, with a warning
    monkeypatch.setenv(DISK_ENV, "64")
    assert SandboxLimits.from_template().disk_bytes == 64 << 20


@needs_images
async def test_mount8_mounts_the_image_where_the_loop_ioctls_fail(
    tmp_path: Path,
    bounded_env: None,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An older kernel without LOOP_CONFIGURE, or a /dev without loop nodes, cannot be had
    # on demand: the ioctl path is made to fail as it would there.
    def no_ioctls(image: Path, workspace: Path) -> None:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(disk, "_loop_mount", no_ioctls)
    async with _backend(tmp_path / "state") as backend:
        api = Api(session, backend.base_url, backend.api_key)
        sbx = await api.create()
        assert is_mount(workspace(backend, sbx))
        files, size, err = await fill(api, sbx)
        assert err == 28 and size <= BOUND, (files, size, err)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the state directory")
async def test_a_full_host_disk_is_507_and_no_image_is_tried_on_it(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # The host disk here is a 6 MiB tmpfs holding the state directory: too small for an
    # image (the start's probe finds it so), and full before the workspace's 10 GiB bound.
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(state)], check=True)
    try:
        async with _backend(state) as backend:
            api = Api(session, backend.base_url, backend.api_key)
            sbx = await api.create()
            assert not is_mount(workspace(backend, sbx))
            assert (await write(api, sbx, "/workspace/keep.txt", b"the old content")).status == 200
            big = os.urandom(8 << 20)
            (await write(api, sbx, "/workspace/keep.txt", big)).expect_error(
                507, "INSUFFICIENT_STORAGE"
            )
            (await upload(api, sbx, "/workspace/keep.txt", big)).expect_error(
                507, "INSUFFICIENT_STORAGE"
            )
            assert await read(api, sbx, "/workspace/keep.txt") == "the old content"
            assert not [p for p in state.iterdir() if p.name.startswith(".disk-probe-")]
    finally:
        subprocess.run(["umount", "--lazy", str(state)], check=False)


@needs_images
async def test_a_host_disk_that_fills_under_an_image_is_507_and_the_old_file_survives(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 64 MiB image on a 20 MiB host disk (a tmpfs): the image is sparse, so the host fills
    # first, the loop device fails the image's writes, and the file system turns read-only.
    monkeypatch.setenv(DISK_ENV, "64")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(state)], check=True)
    try:
        async with _backend(state) as backend:
            api = Api(session, backend.base_url, backend.api_key)
            sbx = await api.create()
            assert is_mount(workspace(backend, sbx))
            assert (await write(api, sbx, "/workspace/keep.txt", b"the old content")).status == 200
            (await write(api, sbx, "/workspace/keep.txt", os.urandom(20 << 20))).expect_error(
                507, "INSUFFICIENT_STORAGE"
            )
            assert await read(api, sbx, "/workspace/keep.txt") == "the old content"
            (await write(api, sbx, "/workspace/other.txt", b"x")).expect_error(
                507, "INSUFFICIENT_STORAGE"
            )  # read-only now
    finally:
        subprocess.run(["umount", "--lazy", str(state)], check=False)
