"""The files API under attack: every OS error on a path a request names is a documented 4xx,
a component swapped for a link while requests run cannot redirect, leak or break an answer,
deep trees are removed (by ``/files/remove`` and by deleting the sandbox), and a restart
sweeps what a failed deletion or a crash left."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hopx_async.local import LocalBackend

from .helpers import Answer, Api, Sandbox

pytestmark = pytest.mark.anyio

#: the documented error body (docs/wire.md section 4): never a 500
ANSWERED = {200, 400, 403, 404, 409}


def _workspace(backend: LocalBackend, sbx: Sandbox) -> Path:
    assert backend.state_dir is not None
    return backend.state_dir / "sandboxes" / sbx.id / "workspace"


async def _download(api: Api, sbx: Sandbox, path: str) -> Answer:
    """A download (a streamed answer carries no request id header)."""
    headers = {"Authorization": f"Bearer {sbx.token}"}
    url = sbx.host + "/files/download"
    async with api.session.get(url, params={"path": path}, headers=headers) as resp:
        data = await resp.read()
        if resp.status == 200:
            return Answer(200, data.decode(errors="replace"), resp.headers)
        return Answer(resp.status, await resp.json(content_type=None), resp.headers)


async def _each_verb(api: Api, sbx: Sandbox, path: str) -> list[tuple[str, Answer]]:
    """The path through every route that takes one."""
    answers = [
        ("read", await api.agent(sbx, "GET", "/files/read", params={"path": path})),
        ("exists", await api.agent(sbx, "GET", "/files/exists", params={"path": path})),
        ("list", await api.agent(sbx, "GET", "/files/list", params={"path": path})),
        ("download", await _download(api, sbx, path)),
        (
            "write",
            await api.agent(sbx, "POST", "/files/write", json={"path": path, "content": "x"}),
        ),
        ("mkdir", await api.agent(sbx, "POST", "/files/mkdir", json={"path": path})),
        ("remove", await api.agent(sbx, "DELETE", "/files/remove", params={"path": path})),
    ]
    form = aiohttp.FormData()
    form.add_field("path", path)
    form.add_field("file", b"data", filename="b.bin", content_type="application/octet-stream")
    answers.append(("upload", await api.agent(sbx, "POST", "/files/upload", data=form)))
    return answers


async def _sh(api: Api, sbx: Sandbox, command: str) -> None:
    answer = await api.agent(sbx, "POST", "/commands/run", json={"command": command})
    assert answer.status == 200, answer.body
    assert answer.body["exit_code"] == 0, answer.body


def _documented(answer: Answer) -> None:
    assert answer.status in ANSWERED, (answer.status, answer.body)
    if answer.status >= 400:
        assert isinstance(answer.body, dict), answer.body
        assert set(answer.body) >= {"error", "code", "request_id"}, answer.body


@pytest.mark.parametrize(
    "path",
    [
        "/workspace/" + "n" * 300,  # ENAMETOOLONG
        "/workspace/" + "n" * 300 + "/x",
        "/workspace/" + "/".join(["d"] * 3000),  # deeper than any limit, longer than PATH_MAX
        "loop/x",  # ELOOP: a link to itself
        "file.txt/x",  # ENOTDIR
    ],
)
async def test_os_errors_are_documented_4xx(api: Api, sbx: Sandbox, path: str) -> None:
    await _sh(api, sbx, "ln -s loop loop; echo hi > file.txt")
    for verb, answer in await _each_verb(api, sbx, path):
        assert answer.status != 500, (verb, answer.body)
        _documented(answer)
        if verb != "exists":
            assert answer.status >= 400, (verb, answer.body)
    listed = await api.agent(sbx, "GET", "/files/list")
    assert {f["name"] for f in listed.body["files"]} == {"loop", "file.txt"}, "nothing was built"


async def test_unencodable_name_is_400(api: Api, sbx: Sandbox) -> None:
    for route in ("/files/write", "/files/mkdir"):
        body = {"path": "/workspace/\ud800", "content": "x"}
        answer = await api.agent(sbx, "POST", route, json=body)
        answer.expect_error(400, "INVALID_REQUEST")


async def test_too_long_names_the_limit(api: Api, sbx: Sandbox) -> None:
    long = await api.agent(sbx, "GET", "/files/read", params={"path": "a" * 300})
    assert "255" in long.expect_error(400, "PATH_TOO_LONG")["error"]
    deep = await api.agent(
        sbx, "POST", "/files/write", json={"path": "/".join(["d"] * 3000), "content": "x"}
    )
    assert "4096" in deep.expect_error(400, "PATH_TOO_LONG")["error"]
    depth = await api.agent(sbx, "POST", "/files/mkdir", json={"path": "/".join(["d"] * 300)})
    assert "256" in depth.expect_error(400, "PATH_TOO_LONG")["error"]


async def test_unreadable_directory_is_403(api: Api, sbx: Sandbox, backend: LocalBackend) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a directory whatever its mode")
    locked = _workspace(backend, sbx) / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        for verb, answer in await _each_verb(api, sbx, "locked/x"):
            assert answer.status != 500, (verb, answer.body)
            _documented(answer)
    finally:
        locked.chmod(0o700)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE), or in two renames."""
    if hasattr(_libc, "renameat2"):
        done = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), 2)
        if done == 0:
            return
    spare = a.with_name(a.name + ".spare")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)


async def test_swapped_component_cannot_redirect_or_leak(
    api: Api, sbx: Sandbox, backend: LocalBackend
) -> None:
    """A thread swaps the directory ``d`` and a link to ``/proc/self`` (and one to ``..``)
    while every route works on ``d/...``: no 500, nothing from outside, no host path."""
    ws = _workspace(backend, sbx)
    await _sh(api, sbx, "mkdir d && echo inside > d/f.txt && ln -s /proc/self l")
    (ws / "up").symlink_to("../..")
    stop = threading.Event()
    swaps = [0]

    def heal() -> None:  # the requests remove and replace what they name, too
        # (racing them: a name may come or go between the check and the call)
        with contextlib.suppress(OSError):
            if not os.path.lexists(ws / "d"):
                os.makedirs(ws / "d", exist_ok=True)
        for name, link in (("l", "/proc/self"), ("up", "../..")):
            with contextlib.suppress(OSError):
                if not os.path.lexists(ws / name):
                    os.symlink(link, ws / name)

    def swapper() -> None:
        while not stop.is_set():
            other = ws / ("l" if swaps[0] % 2 else "up")
            try:
                _exchange(ws / "d", other)
                _exchange(ws / "d", other)
            except OSError:
                heal()
            swaps[0] += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    seen: list[tuple[str, Answer]] = []
    host = str(backend.state_dir)
    try:
        for _ in range(25):
            for path in ("d/f.txt", "d", "d/new/g.txt"):
                seen += await _each_verb(api, sbx, path)
    finally:
        stop.set()
        thread.join()
    assert swaps[0] > 10
    statuses: dict[int, int] = {}
    for verb, answer in seen:
        _documented(answer)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        text = str(answer.body)
        assert host not in text, (verb, answer.body)
        assert f"/workspace/{os.getpid()}" not in text, (verb, answer.body)
        if isinstance(answer.body, dict) and isinstance(answer.body.get("path"), str):
            assert answer.body["path"].startswith("/workspace"), answer.body
        if verb == "read" and answer.status == 200:
            assert answer.body["content"] in ("inside\n", "x", "data"), answer.body
    assert 500 not in statuses
    assert statuses.get(200), statuses
    # nothing was written, made or removed outside the workspace
    assert not (ws.parent / "new").exists()
    assert not (ws.parent.parent / "new").exists()


async def test_remove_deep_tree(api: Api, sbx: Sandbox, backend: LocalBackend) -> None:
    code = "import os\nfor _ in range(1500):\n    os.mkdir('t'); os.chdir('t')\nopen('f','w')\n"
    await _sh(api, sbx, f'mkdir deep && cd deep && python3 -c "{code}"')
    removed = await api.agent(sbx, "DELETE", "/files/remove", params={"path": "deep"})
    assert removed.status == 200, removed.body
    assert not (_workspace(backend, sbx) / "deep").exists()


async def test_delete_sandbox_with_deep_tree(api: Api, backend: LocalBackend) -> None:
    sbx = await api.create()
    code = "import os\nfor _ in range(1500):\n    os.mkdir('t'); os.chdir('t')\nopen('f','w')\n"
    await _sh(api, sbx, f'python3 -c "{code}"')
    top = _workspace(backend, sbx).parent
    deleted = await api.cp("DELETE", f"/v1/sandboxes/{sbx.id}")
    assert deleted.status in (200, 204), deleted.body
    assert not top.exists(), "the sandbox's files are gone with it"


def test_restart_sweeps_leftovers(tmp_path: Path) -> None:
    """A directory of a sandbox with no record (a deletion that failed), an upload's staging
    file and a write's unrenamed file are gone after a restart; a live sandbox's files stay."""
    with LocalBackend.in_thread(state_dir=tmp_path) as first:
        created = _sync_create(first)
    layout = tmp_path / "sandboxes"
    orphan = layout / "sbx_orphan" / "workspace"
    orphan.mkdir(parents=True)
    fd = os.open(orphan, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # deeper than shutil.rmtree's recursion can go
        os.mkdir("t", dir_fd=fd)
        child = os.open("t", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    live = layout / created
    (live / "uploads").mkdir(exist_ok=True)
    (live / "uploads" / ".upload-0123456789abcdef").write_bytes(b"partial")
    partial = live / "workspace" / ".hopx-write-0123456789abcdef"
    partial.write_bytes(b"partial")
    (live / "uploads" / ".write-0123456789abcdef").write_text(".hopx-write-0123456789abcdef")
    (live / "workspace" / "keep.txt").write_text("kept")
    with LocalBackend.in_thread(state_dir=tmp_path):
        pass
    assert not (layout / "sbx_orphan").exists()
    assert not partial.exists()
    assert os.listdir(live / "uploads") == []
    assert (live / "workspace" / "keep.txt").read_text() == "kept"


def _sync_create(backend: LocalBackend) -> str:
    async def create() -> Any:
        async with aiohttp.ClientSession() as session:
            return (await Api(session, backend.base_url, backend.api_key).create()).id

    return str(asyncio.run(create()))
