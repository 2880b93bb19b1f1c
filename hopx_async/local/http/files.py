"""The agent's file routes (``/files/*``): a sandbox's files, confined to its workspace.

Each path is resolved and opened by ``runtime.workspace`` (links resolved inside the
workspace, every open without following one; see there) and worked on by
``runtime.fileops``; these routes read the request and stream bodies. Sizes (documented in
``docs/local-backend.md``): ``/files/read`` answers files up to ``MAX_READ_BYTES``; larger
ones are a 413 (use ``/files/download``, which streams); ``/files/write`` takes what fits
in a request body (32 MiB); ``/files/upload`` streams to disk up to ``max_upload_bytes()``;
``/files/list`` answers at most ``MAX_LIST_ENTRIES`` entries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import os
import secrets
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from ..errors import ApiError, bad_request
from ..runtime import fileops
from ..runtime.fileops import MAX_LIST_ENTRIES, MAX_READ_BYTES
from ..runtime.workspace import (
    DIR_FLAGS,
    STORAGE_ERRNOS,
    WORKSPACE,
    Target,
    open_regular,
    os_error,
    resolve,
)
from .common import json_answer, read_body, state
from .params import opt_bool, opt_str, req_str

__all__ = [
    "MAX_LIST_ENTRIES",
    "MAX_READ_BYTES",
    "UPLOAD_LIMIT_ENV",
    "download_file",
    "file_exists",
    "list_files",
    "make_dir",
    "max_upload_bytes",
    "read_file",
    "remove_file",
    "upload_file",
    "write_file",
]

#: The environment variable that sets the upload limit in bytes (default 1 GiB).
UPLOAD_LIMIT_ENV = "HOPX_LOCAL_MAX_UPLOAD_BYTES"
_DEFAULT_MAX_UPLOAD = 1024 * 1024 * 1024
_CHUNK = 256 * 1024
_MAX_PATH_FIELD = 4096


_T = TypeVar("_T")


async def _work(target: Target, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn`` in a thread; an OS error that got past it is still a documented answer."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except OSError as exc:
        raise os_error(exc, target) from None


def max_upload_bytes() -> int:
    """The upload limit: ``HOPX_LOCAL_MAX_UPLOAD_BYTES`` if set to a positive number, else 1 GiB."""
    raw = os.environ.get(UPLOAD_LIMIT_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return _DEFAULT_MAX_UPLOAD


def _target(request: web.Request, value: str, *, follow_last: bool = True) -> Target:
    """``value`` (the request's ``path``) resolved inside the sandbox's workspace."""
    root = state(request).layout.workspace(request.match_info["sid"])
    return resolve(root, value, follow_last=follow_last)


def _staging(request: web.Request) -> Path:
    """The sandbox's staging directory (uploads, and notes of writes under way)."""
    return state(request).layout.sandbox_dir(request.match_info["sid"]) / "uploads"


async def _room(request: web.Request, target: Target, size: int) -> None:
    """507 when ``size`` more bytes would pass the workspace's bound (the usage check of a
    workspace without an image; see ``runtime.disk``)."""
    disks = state(request).sandboxes.disks
    sandbox_id = request.match_info["sid"]
    if not disks.has_image(sandbox_id):  # (the usage check walks the workspace: a thread)
        await _work(target, disks.check_room, sandbox_id, size)


def _owner(request: web.Request) -> int | None:
    """The uid new files of the sandbox belong to (its own, for a root server with boxes),
    or None (the server's)."""
    return state(request).launcher.owner_of(request.match_info["sid"])


def _now() -> str:
    return fileops.iso_seconds(datetime.datetime.now(datetime.timezone.utc).timestamp())


def _done(target: Target, message: str, size: int | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "success": True,
        "path": target.inside,
        "message": message,
        "timestamp": _now(),
    }
    if size is not None:
        answer["size"] = size
    return answer


def _query_path(request: web.Request, default: str | None = None) -> str:
    value = request.query.get("path", default)
    if value is None:
        raise bad_request("query parameter 'path' is required")
    return value


async def read_file(request: web.Request) -> web.Response:
    """``GET /files/read?path=``: ``{"content", "path", "size"}`` of a UTF-8 text file."""
    target = _target(request, _query_path(request))
    content, size = await _work(target, fileops.read_text, target)
    return json_answer({"content": content, "path": target.inside, "size": size})


def _mode(body: dict[str, Any]) -> int:
    raw = opt_str(body, "mode")
    if raw is None:
        return 0o644
    try:
        mode = int(raw, 8)
    except ValueError:
        raise bad_request(f"'mode' must be octal permissions such as '0644', not {raw!r}") from None
    if not 0 <= mode <= 0o777:
        raise bad_request("'mode' must be permissions between '0000' and '0777'")
    return mode


async def write_file(request: web.Request) -> web.Response:
    """``POST /files/write``: ``{"path", "content", "encoding"?, "mode"?, "overwrite"?}``;
    ``encoding: "base64"`` for bytes."""
    body = await read_body(request)
    path = req_str(body, "path")
    content = body.get("content")
    if not isinstance(content, str):
        raise bad_request("'content' is required and must be a string")
    encoding = opt_str(body, "encoding")
    if encoding in (None, "", "utf-8", "utf8", "text"):
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("'content' must be valid Unicode text") from None
    elif encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("'content' is not valid base64 (encoding 'base64')") from None
    else:
        raise bad_request(f"'encoding' must be 'base64' or left out, not {encoding!r}")
    mode = _mode(body)
    overwrite = opt_bool(body, "overwrite", True)
    target = _target(request, path)
    await _room(request, target, len(data))
    await _work(
        target,
        fileops.write,
        target,
        data,
        mode,
        overwrite=overwrite,
        owner=_owner(request),
        staging=_staging(request),
    )
    return json_answer(_done(target, "file written", len(data)))


# -- list, exists, mkdir, remove --------------------------------------------------------------


async def list_files(request: web.Request) -> web.Response:
    """``GET /files/list?path=`` (default ``/workspace``): ``{"files", "count", "path"}``."""
    target = _target(request, _query_path(request, WORKSPACE))
    files, truncated = await _work(target, fileops.listing, target)
    answer: dict[str, Any] = {"files": files, "count": len(files), "path": target.inside}
    if truncated:
        answer["truncated"] = True
    return json_answer(answer)


async def file_exists(request: web.Request) -> web.Response:
    """``GET /files/exists?path=``: ``{"exists", "path", "is_directory"}``."""
    target = _target(request, _query_path(request))
    try:
        info = await _work(target, fileops.lookup, target)
    except ApiError as exc:
        if exc.code != "FILE_NOT_FOUND":
            raise
        info = None
    return json_answer(
        {
            "exists": info is not None,
            "path": target.inside,
            "is_directory": info is not None and stat.S_ISDIR(info.st_mode),
        }
    )


async def make_dir(request: web.Request) -> web.Response:
    """``POST /files/mkdir`` ``{"path"}``: create a directory and its missing parents."""
    body = await read_body(request)
    target = _target(request, req_str(body, "path"))
    await _work(target, fileops.make_dirs, target, _owner(request))
    return json_answer(_done(target, "directory created"))


async def remove_file(request: web.Request) -> web.Response:
    """``DELETE /files/remove?path=``: remove a file, a link, or a directory tree."""
    target = _target(request, _query_path(request), follow_last=False)
    await _work(target, fileops.remove, target)
    return json_answer(_done(target, "removed"))


# -- upload, download -------------------------------------------------------------------------


async def download_file(request: web.Request) -> web.StreamResponse:
    """``GET /files/download?path=``: the file's bytes, streamed in chunks."""
    target = _target(request, _query_path(request))
    with open_regular(target, os.O_RDONLY) as (fd, info):
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{_header_name(target.name)}"',
            }
        )
        response.content_length = info.st_size
        await response.prepare(request)
        left = info.st_size  # a file that grows meanwhile is sent as it was when opened
        while left > 0:
            chunk = await asyncio.to_thread(os.read, fd, min(_CHUNK, left))
            if not chunk:
                break
            await response.write(chunk)
            left -= len(chunk)
        if left > 0:  # it shrank: the promised length cannot be met; end the connection
            raise ConnectionResetError(f"{target.inside} shrank while it was sent")
        await response.write_eof()
        return response


def _header_name(name: str) -> str:
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name) or "file"


async def _chunk(part: BodyPartReader, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(part.read_chunk(_CHUNK), timeout)
    except asyncio.TimeoutError:
        raise ApiError(
            408, "REQUEST_TIMEOUT", f"no upload data arrived within {timeout:g} seconds"
        ) from None


async def _path_field(part: BodyPartReader, timeout: float) -> str:
    data = b""
    while chunk := await _chunk(part, timeout):
        data += chunk
        if len(data) > _MAX_PATH_FIELD:
            raise bad_request(f"the 'path' field is longer than {_MAX_PATH_FIELD} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the 'path' field must be UTF-8 text") from None


async def upload_file(request: web.Request) -> web.Response:
    """``POST /files/upload`` (multipart: ``file``, and ``path`` as a field or a query
    parameter): streamed to disk, then moved into place."""
    if not request.content_type.startswith("multipart/"):
        raise bad_request("the upload must be multipart/form-data with a 'file' part")
    timeout = state(request).read_timeout
    limit = max_upload_bytes()
    owner = _owner(request)
    staging = _staging(request)
    path = request.query.get("path")
    staged = f".upload-{secrets.token_hex(8)}"
    try:
        await asyncio.to_thread(staging.mkdir, mode=0o700, exist_ok=True)
        staged_dir = os.open(staging, DIR_FLAGS)
    except OSError:
        raise ApiError(404, "FILE_NOT_FOUND", "the sandbox's files are gone") from None
    received: int | None = None
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise bad_request("nested multipart parts are not accepted")
                if part.name == "path":
                    path = await _path_field(part, timeout)
                elif part.name == "file":
                    if received is not None:
                        raise bad_request("only one 'file' part is accepted")
                    received = await _stage(part, staged_dir, staged, limit, timeout)
                else:
                    while await _chunk(part, timeout):
                        pass  # an unknown field is read past
        except (ValueError, AssertionError, web.HTTPException) as exc:
            raise bad_request(f"the multipart body could not be read: {exc}") from None
        if received is None:
            raise bad_request("the upload has no 'file' part")
        if path is None:
            raise bad_request("the destination 'path' is required (a form field or query)")
        target = _target(request, path)
        await _room(request, target, received)
        await _work(target, os.chmod, staged, 0o644, dir_fd=staged_dir)
        if owner is not None:
            await _work(target, os.chown, staged, owner, owner, dir_fd=staged_dir)
        await _work(target, fileops.place, staged_dir, staged, target, owner=owner)
        return json_answer(_done(target, "file uploaded", received))
    finally:
        with suppress(FileNotFoundError):
            os.unlink(staged, dir_fd=staged_dir)
        os.close(staged_dir)


async def _stage(
    part: BodyPartReader, staged_dir: int, staged: str, limit: int, timeout: float
) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(staged, flags, 0o600, dir_fd=staged_dir)
    size = 0
    try:
        while chunk := await _chunk(part, timeout):
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413,
                    "FILE_TOO_LARGE",
                    f"the upload is larger than the limit of {limit} bytes ({UPLOAD_LIMIT_ENV})",
                )
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)  # on disk before it is renamed into place
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise ApiError(507, "INSUFFICIENT_STORAGE", f"upload: {exc.strerror}") from None
        raise bad_request(f"upload: {exc.strerror or 'cannot be stored'}") from None
    finally:
        os.close(fd)
    return size
