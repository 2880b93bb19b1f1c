"""The agent's ``/files/*`` routes over raw HTTP: the verbs, the answers' fields, and every
way out of the workspace (``..``, absolute paths, links planted by sandboxed code, FIFOs,
oversize files and uploads)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import Answer, Api, Sandbox

pytestmark = pytest.mark.anyio

INFO_FIELDS = {"name", "path", "size", "is_directory", "permissions", "modified_time"}


async def _run(api: Api, sbx: Sandbox, command: str) -> dict[str, Any]:
    """Run a shell command inside the sandbox (its working directory is /workspace)."""
    answer = await api.agent(sbx, "POST", "/commands/run", json={"command": command})
    assert answer.status == 200, answer.body
    assert answer.body["exit_code"] == 0, answer.body
    return dict(answer.body)


async def _read(api: Api, sbx: Sandbox, path: str) -> Answer:
    return await api.agent(sbx, "GET", "/files/read", params={"path": path})


async def _download(api: Api, sbx: Sandbox, path: str) -> tuple[int, bytes, Any]:
    headers = {"Authorization": f"Bearer {sbx.token}"}
    url = sbx.host + "/files/download"
    async with api.session.get(url, params={"path": path}, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


async def _upload(
    api: Api, sbx: Sandbox, path: str, data: bytes, *, path_first: bool = True
) -> Answer:
    form = aiohttp.FormData()
    if path_first:
        form.add_field("path", path)
    form.add_field("file", data, filename="blob.bin", content_type="application/octet-stream")
    if not path_first:
        form.add_field("path", path)
    return await api.agent(sbx, "POST", "/files/upload", data=form)


async def test_write_read_list_exists_remove(api: Api, sbx: Sandbox) -> None:
    wrote = await api.agent(
        sbx, "POST", "/files/write", json={"path": "/workspace/dir/a.txt", "content": "héllo\n"}
    )
    assert wrote.status == 200, wrote.body
    assert wrote.body["success"] is True
    assert wrote.body["path"] == "/workspace/dir/a.txt"
    assert wrote.body["size"] == len("héllo\n".encode())
    read = await _read(api, sbx, "dir/a.txt")  # relative: under /workspace
    assert read.body == {"content": "héllo\n", "path": "/workspace/dir/a.txt", "size": 7}
    seen = await _run(api, sbx, "cat dir/a.txt; stat -c %a dir/a.txt")
    assert seen["stdout"] == "héllo\n644\n", "sandboxed code sees the same file"

    await api.agent(sbx, "POST", "/files/mkdir", json={"path": "/workspace/dir/sub/deeper"})
    listed = await api.agent(sbx, "GET", "/files/list", params={"path": "/workspace/dir"})
    assert listed.body["path"] == "/workspace/dir"
    assert listed.body["count"] == 2
    by_name = {f["name"]: f for f in listed.body["files"]}
    assert set(by_name) == {"a.txt", "sub"}
    assert set(by_name["a.txt"]) >= INFO_FIELDS
    assert by_name["a.txt"]["is_directory"] is False
    assert by_name["a.txt"]["size"] == 7
    assert by_name["a.txt"]["path"] == "/workspace/dir/a.txt"
    assert by_name["a.txt"]["permissions"] == "-rw-r--r--"
    assert by_name["sub"]["is_directory"] is True
    root = await api.agent(sbx, "GET", "/files/list")
    assert root.body["path"] == "/workspace"
    assert "dir" in {f["name"] for f in root.body["files"]}

    exists = await api.agent(sbx, "GET", "/files/exists", params={"path": "dir/a.txt"})
    assert exists.body == {"exists": True, "path": "/workspace/dir/a.txt", "is_directory": False}
    nothing = await api.agent(sbx, "GET", "/files/exists", params={"path": "dir/none"})
    assert nothing.body["exists"] is False

    removed = await api.agent(sbx, "DELETE", "/files/remove", params={"path": "/workspace/dir"})
    assert removed.status == 200, removed.body
    assert removed.body["success"] is True
    gone = await api.agent(sbx, "GET", "/files/exists", params={"path": "dir"})
    assert gone.body["exists"] is False
    (await _read(api, sbx, "dir/a.txt")).expect_error(404, "FILE_NOT_FOUND")
    (await api.agent(sbx, "DELETE", "/files/remove", params={"path": "dir"})).expect_error(
        404, "FILE_NOT_FOUND"
    )


async def test_bytes_base64_mode_overwrite(api: Api, sbx: Sandbox) -> None:
    data = bytes(range(256)) * 4
    body = {"path": "bin.dat", "content": base64.b64encode(data).decode(), "encoding": "base64"}
    assert (await api.agent(sbx, "POST", "/files/write", json=body)).status == 200
    status, got, headers = await _download(api, sbx, "/workspace/bin.dat")
    assert status == 200
    assert got == data
    assert headers["Content-Type"] == "application/octet-stream"
    (await _read(api, sbx, "bin.dat")).expect_error(415, "NOT_TEXT")

    script = {"path": "run.sh", "content": "echo ran\n", "mode": "0755"}
    assert (await api.agent(sbx, "POST", "/files/write", json=script)).status == 200
    assert (await _run(api, sbx, "./run.sh"))["stdout"] == "ran\n"

    again = {"path": "run.sh", "content": "x", "overwrite": False}
    (await api.agent(sbx, "POST", "/files/write", json=again)).expect_error(409, "FILE_EXISTS")
    assert (await _read(api, sbx, "run.sh")).body["content"] == "echo ran\n"


@pytest.mark.parametrize(
    "body",
    [
        {"content": "x"},
        {"path": "a", "content": 3},
        {"path": "a"},
        {"path": "a", "content": "!!", "encoding": "base64"},
        {"path": "a", "content": "x", "encoding": "rot13"},
        {"path": "a", "content": "x", "mode": "0999"},
        {"path": "a", "content": "x", "mode": "04755"},
        {"path": "a\x00b", "content": "x"},
        {"path": "", "content": "x"},
    ],
)
async def test_bad_writes_are_a_400(api: Api, sbx: Sandbox, body: dict[str, Any]) -> None:
    answer = await api.agent(sbx, "POST", "/files/write", json=body)
    answer.expect_error(400, "INVALID_REQUEST")


async def test_upload_streams_to_disk_and_download_streams_back(api: Api, sbx: Sandbox) -> None:
    data = b"\x00\xffpayload" * 100_000  # about 1 MB
    for path_first in (True, False):
        up = await _upload(api, sbx, "/workspace/up/blob.bin", data, path_first=path_first)
        assert up.status == 200, up.body
        assert up.body["path"] == "/workspace/up/blob.bin"
        assert up.body["size"] == len(data)
        status, got, headers = await _download(api, sbx, "up/blob.bin")
        assert status == 200
        assert got == data
        assert int(headers["Content-Length"]) == len(data)
    assert (await _run(api, sbx, "wc -c < up/blob.bin"))["stdout"].strip() == str(len(data))
    no_file = aiohttp.FormData()
    no_file.add_field("path", "x")
    answer = await api.agent(sbx, "POST", "/files/upload", data=no_file)
    answer.expect_error(400, "INVALID_REQUEST")
    not_multipart = await api.agent(sbx, "POST", "/files/upload", json={"path": "x"})
    not_multipart.expect_error(400, "INVALID_REQUEST")


async def test_oversize(api: Api, sbx: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    await _run(api, sbx, "truncate -s 17M big")  # sparse: no 17 MB written
    (await _read(api, sbx, "big")).expect_error(413, "FILE_TOO_LARGE")
    status, got, _ = await _download(api, sbx, "big")
    assert status == 200
    assert len(got) == 17 * 1024 * 1024, "download streams what read refuses"

    monkeypatch.setenv("HOPX_LOCAL_MAX_UPLOAD_BYTES", "1000")
    assert (await _upload(api, sbx, "small.bin", b"x" * 1000)).body["size"] == 1000
    over = await _upload(api, sbx, "over.bin", b"x" * 1001)
    over.expect_error(413, "FILE_TOO_LARGE")
    exists = await api.agent(sbx, "GET", "/files/exists", params={"path": "over.bin"})
    assert exists.body["exists"] is False, "nothing of a refused upload is left in place"


ESCAPES = [
    "../outside",
    "/workspace/../etc/passwd",
    "/etc/passwd",
    "/tmp/x",
    "a/../../x",
    "/",
    "/workspacefoo/x",
]


@pytest.mark.parametrize("path", ESCAPES)
async def test_paths_outside_the_workspace_are_refused(api: Api, sbx: Sandbox, path: str) -> None:
    calls = [
        ("GET", "/files/read", {"params": {"path": path}}),
        ("GET", "/files/list", {"params": {"path": path}}),
        ("GET", "/files/exists", {"params": {"path": path}}),
        ("GET", "/files/download", {"params": {"path": path}}),
        ("DELETE", "/files/remove", {"params": {"path": path}}),
        ("POST", "/files/write", {"json": {"path": path, "content": "x"}}),
        ("POST", "/files/mkdir", {"json": {"path": path}}),
    ]
    for method, route, kwargs in calls:
        answer = await api.agent(sbx, method, route, **kwargs)
        answer.expect_error(403, "PATH_FORBIDDEN")
    (await _upload(api, sbx, path, b"x")).expect_error(403, "PATH_FORBIDDEN")


async def test_links_planted_by_sandboxed_code_do_not_lead_out(
    api: Api, sbx: Sandbox, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret\n")
    await _run(
        api,
        sbx,
        f"ln -s {outside} file-link; ln -s {tmp_path} dir-link; ln -s /etc etc-link;"
        " ln -s ../.. up-link; mkdir real; echo inside > real/data.txt;"
        " ln -s data.txt real/alias; ln -s /workspace/real real-link",
    )
    for path in ("file-link", "dir-link/outside.txt", "etc-link/hostname", "up-link/x"):
        (await _read(api, sbx, path)).expect_error(403, "PATH_FORBIDDEN")
        status, got, _ = await _download(api, sbx, path)
        assert status == 403
        assert b"host secret" not in got
    listing = await api.agent(sbx, "GET", "/files/list", params={"path": "dir-link"})
    listing.expect_error(403, "PATH_FORBIDDEN")
    for path in ("file-link", "dir-link/new.txt"):
        write = await api.agent(sbx, "POST", "/files/write", json={"path": path, "content": "x"})
        write.expect_error(403, "PATH_FORBIDDEN")
        (await _upload(api, sbx, path, b"x")).expect_error(403, "PATH_FORBIDDEN")
    mkdir = await api.agent(sbx, "POST", "/files/mkdir", json={"path": "dir-link/sub"})
    mkdir.expect_error(403, "PATH_FORBIDDEN")
    assert outside.read_text() == "host secret\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.txt"]

    # Links that stay inside the workspace work as links do.
    assert (await _read(api, sbx, "real/alias")).body["content"] == "inside\n"
    inside = await api.agent(sbx, "GET", "/files/list", params={"path": "real-link"})
    assert {f["name"] for f in inside.body["files"]} == {"data.txt", "alias"}
    # Removing a link removes the link, never what it points to.
    for path in ("file-link", "dir-link"):
        removed = await api.agent(sbx, "DELETE", "/files/remove", params={"path": path})
        assert removed.status == 200, removed.body
    assert outside.read_text() == "host secret\n"
    # A tree holding a link to the outside is removed without following it.
    await _run(api, sbx, f"mkdir tree; ln -s {tmp_path} tree/out")
    assert (await api.agent(sbx, "DELETE", "/files/remove", params={"path": "tree"})).status == 200
    assert outside.exists()


async def test_special_files_and_the_workspace_itself(api: Api, sbx: Sandbox) -> None:
    await _run(api, sbx, "mkfifo pipe")
    (await _read(api, sbx, "pipe")).expect_error(400, "INVALID_REQUEST")
    status, _, _ = await _download(api, sbx, "pipe")
    assert status == 400
    write = await api.agent(sbx, "POST", "/files/write", json={"path": "pipe", "content": "x"})
    write.expect_error(400, "INVALID_REQUEST")
    (await _read(api, sbx, "/workspace")).expect_error(400, "INVALID_REQUEST")
    keep = await api.agent(sbx, "DELETE", "/files/remove", params={"path": "/workspace"})
    keep.expect_error(400, "INVALID_REQUEST")
    (await api.agent(sbx, "GET", "/files/read")).expect_error(400, "INVALID_REQUEST")


async def test_another_sandboxs_token_is_refused(api: Api, sbx: Sandbox) -> None:
    other = await api.create()
    try:
        stranger = Sandbox({**sbx.data, "auth_token": other.token})
        answer = await api.agent(stranger, "GET", "/files/list")
        answer.expect_error(403, "FORBIDDEN")
        anonymous = await api.raw("GET", sbx.host + "/files/list")
        anonymous.expect_error(401, "AUTHENTICATION_REQUIRED")
    finally:
        await api.cp("DELETE", f"/v1/sandboxes/{other.id}")
