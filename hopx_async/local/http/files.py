"""The agent's file routes (``/files/*``): a sandbox's files, confined to its workspace.

Paths follow the rules of ``working_dir``: ``/workspace`` and paths under it are the
sandbox's workspace, a relative path is relative to ``/workspace``, and nothing outside it
is reachable. Sandboxed code is untrusted and may plant symbolic links or swap directories
at any moment, so a path is resolved in two steps:

1. symbolic links are resolved *inside* the workspace (an absolute target means the
   sandbox's view: ``/workspace/...``); a link that leads elsewhere is refused (403);
2. the resolved path is then opened one component at a time from the workspace with
   ``O_NOFOLLOW``: a link that appears between the two steps makes the open fail (403),
   never follow.

Files are opened with ``O_NONBLOCK`` and checked with ``fstat``, so a FIFO or a device
planted by sandboxed code cannot stall or feed the server. Sizes (documented in
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
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
from aiohttp import BodyPartReader, web

from ..errors import ApiError, bad_request
from ..runtime.launch import BOX_ID
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

#: ``/files/read`` answers files up to this size (16 MiB); larger ones: ``/files/download``.
MAX_READ_BYTES = 16 * 1024 * 1024
#: ``/files/list`` answers at most this many entries (``truncated`` tells when there were more).
MAX_LIST_ENTRIES = 10_000
#: The environment variable that sets the upload limit in bytes (default 1 GiB).
UPLOAD_LIMIT_ENV = "HOPX_LOCAL_MAX_UPLOAD_BYTES"
_DEFAULT_MAX_UPLOAD = 1024 * 1024 * 1024
_CHUNK = 256 * 1024
_MAX_LINK_HOPS = 40
_MAX_PATH_FIELD = 4096
_MAX_TREE_DEPTH = 256
_WORKSPACE = "/workspace"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def max_upload_bytes() -> int:
    """The upload limit: ``HOPX_LOCAL_MAX_UPLOAD_BYTES`` if set to a positive number, else 1 GiB."""
    raw = os.environ.get(UPLOAD_LIMIT_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return _DEFAULT_MAX_UPLOAD


# -- paths ------------------------------------------------------------------------------------


@attrs.frozen
class _Target:
    """A path the request named: the workspace on the host, the resolved components under
    it, and the path as the sandbox sees it (``/workspace/...``)."""

    root: Path
    parts: tuple[str, ...]
    argument: str
    given: str

    @property
    def inside(self) -> str:
        return _WORKSPACE + "".join("/" + p for p in self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""


def _forbidden(argument: str, value: str, why: str = "leaves the sandbox's workspace") -> ApiError:
    return ApiError(403, "PATH_FORBIDDEN", f"'{argument}' {value!r} {why} ({_WORKSPACE})")


def _lexical_parts(value: str, argument: str) -> list[str]:
    """The components under ``/workspace`` that ``value`` names, before any link is read."""
    if value == "":
        raise bad_request(f"'{argument}' must not be empty")
    if "\x00" in value:
        raise bad_request(f"'{argument}' must not contain NUL characters")
    if value.startswith("/"):
        norm = "/" + posixpath.normpath(value).lstrip("/")
        if norm == _WORKSPACE:
            return []
        if not norm.startswith(_WORKSPACE + "/"):
            raise _forbidden(argument, value, "is outside the sandbox's workspace")
        relative = norm[len(_WORKSPACE) + 1 :]
    else:
        relative = posixpath.normpath(value)
        if relative == ".." or relative.startswith("../"):
            raise _forbidden(argument, value)
        if relative == ".":
            return []
    return relative.split("/")


def _target(
    request: web.Request, value: str, argument: str = "path", *, follow_last: bool = True
) -> _Target:
    """Resolve ``value`` inside the sandbox's workspace (links too); refuse what leaves it."""
    sandbox_id = request.match_info["sid"]
    root = state(request).layout.workspace(sandbox_id)
    host_root = os.path.realpath(root)
    pending = _lexical_parts(value, argument)
    resolved: list[str] = []
    hops = 0
    missing = False
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not resolved:
                raise _forbidden(argument, value, "leads (through a link) outside")
            resolved.pop()
            continue
        if missing or (not pending and not follow_last):
            resolved.append(name)
            continue
        host = root.joinpath(*resolved, name)
        try:
            info = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            missing = True  # the rest is created or answered 404 by the strict open
            resolved.append(name)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(name)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise bad_request(f"'{argument}' {value!r}: too many levels of symbolic links")
        link = os.readlink(host)
        if link.startswith("/"):
            norm = "/" + posixpath.normpath(link).lstrip("/")
            if norm == _WORKSPACE or norm.startswith(_WORKSPACE + "/"):
                rest = norm[len(_WORKSPACE) :]
            elif norm == host_root or norm.startswith(host_root + "/"):
                rest = norm[len(host_root) :]  # a link made outside a box: the host's path
            else:
                raise _forbidden(argument, value, "leads (through a link) outside")
            resolved = []
            pending = rest.split("/") + pending
        else:
            pending = link.split("/") + pending
    return _Target(root, tuple(resolved), argument, value)


@contextmanager
def _parent_dir(target: _Target, *, create: bool, chown: bool) -> Iterator[int]:
    """An fd of the target's parent directory, opened component by component without
    following any link (and creating missing ones when ``create``)."""
    with _dir_fd(target, target.parts[:-1], create=create, chown=chown) as fd:
        yield fd


@contextmanager
def _dir_fd(target: _Target, parts: tuple[str, ...], *, create: bool, chown: bool) -> Iterator[int]:
    try:
        fd = os.open(target.root, _DIR_FLAGS)
    except FileNotFoundError:
        raise ApiError(404, "FILE_NOT_FOUND", "the sandbox's workspace is gone") from None
    try:
        for name in parts:
            created = False
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            if created and chown:
                os.fchown(fd, BOX_ID, BOX_ID)
        yield fd
    except OSError as exc:
        raise _os_error(exc, target) from None
    finally:
        os.close(fd)


def _os_error(exc: OSError, target: _Target) -> ApiError:
    where = f"'{target.argument}' {target.given!r}"
    if exc.errno == errno.ENOENT:
        return ApiError(404, "FILE_NOT_FOUND", f"{where}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return ApiError(403, "PATH_FORBIDDEN", f"{where}: a symbolic link is in the way")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ApiError(403, "PATH_FORBIDDEN", f"{where}: permission denied")
    if exc.errno == errno.ENOTDIR:
        return bad_request(f"{where}: a component of the path is not a directory")
    if exc.errno == errno.EISDIR:
        return bad_request(f"{where} is a directory")
    if exc.errno == errno.EEXIST:
        return ApiError(409, "FILE_EXISTS", f"{where} exists already")
    if exc.errno in (errno.ENOTEMPTY, errno.EBUSY):
        return ApiError(409, "CONFLICT", f"{where}: {exc.strerror}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ApiError(507, "INSUFFICIENT_STORAGE", f"{where}: {exc.strerror}")
    return bad_request(f"{where}: {exc.strerror or exc}")


def _chown_new(request: web.Request) -> bool:
    """Whether new files must belong to the box's user (boxed, and the server is root)."""
    return state(request).launcher.boxed and os.geteuid() == 0


def _iso(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def _now() -> str:
    return _iso(datetime.datetime.now(datetime.timezone.utc).timestamp())


def _done(target: _Target, message: str, size: int | None = None) -> dict[str, Any]:
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


@contextmanager
def _open_regular(target: _Target, flags: int) -> Iterator[tuple[int, os.stat_result]]:
    """Open the target's last component (no link followed) and check it is a regular file."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with _parent_dir(target, create=False, chown=False) as parent:
        try:
            fd = os.open(target.name, flags | _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _os_error(exc, target) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
        os.set_blocking(fd, True)
        yield fd, info
    finally:
        os.close(fd)


# -- read, write ------------------------------------------------------------------------------


def _read_text(target: _Target) -> tuple[str, int]:
    with _open_regular(target, os.O_RDONLY) as (fd, info):
        if info.st_size > MAX_READ_BYTES:
            raise ApiError(
                413,
                "FILE_TOO_LARGE",
                f"{target.inside} is {info.st_size} bytes; /files/read answers at most"
                f" {MAX_READ_BYTES} (use /files/download, which streams)",
            )
        chunks = []
        left = MAX_READ_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(_CHUNK, left))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > MAX_READ_BYTES:
        raise ApiError(413, "FILE_TOO_LARGE", f"{target.inside} grew past {MAX_READ_BYTES} bytes")
    try:
        return data.decode("utf-8"), len(data)
    except UnicodeDecodeError:
        raise ApiError(
            415,
            "NOT_TEXT",
            f"{target.inside} is not UTF-8 text; download its bytes with /files/download",
        ) from None


async def read_file(request: web.Request) -> web.Response:
    """``GET /files/read?path=``: ``{"content", "path", "size"}`` of a UTF-8 text file."""
    target = _target(request, _query_path(request))
    content, size = await asyncio.to_thread(_read_text, target)
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


def _write(target: _Target, data: bytes, mode: int, *, overwrite: bool, chown: bool) -> None:
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    flags = os.O_WRONLY | os.O_CREAT | (0 if overwrite else os.O_EXCL)
    with _parent_dir(target, create=True, chown=chown) as parent:
        try:
            existed = _exists_in(parent, target.name)
            fd = os.open(target.name, flags | _FILE_FLAGS, mode, dir_fd=parent)
        except OSError as exc:
            raise _os_error(exc, target) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:_CHUNK]) :]
        os.fchmod(fd, mode)
        if chown and not existed:
            os.fchown(fd, BOX_ID, BOX_ID)
    except OSError as exc:
        raise _os_error(exc, target) from None
    finally:
        os.close(fd)


def _exists_in(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


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
    await asyncio.to_thread(
        _write,
        target,
        data,
        mode,
        overwrite=overwrite,
        chown=_chown_new(request),
    )
    return json_answer(_done(target, "file written", len(data)))


# -- list, exists, mkdir, remove --------------------------------------------------------------


def _listing(target: _Target) -> tuple[list[dict[str, Any]], bool]:
    with _dir_fd(target, target.parts, create=False, chown=False) as fd:
        entries: list[dict[str, Any]] = []
        truncated = False
        with os.scandir(fd) as scan:
            for entry in scan:
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while listed
                entries.append(
                    {
                        "name": entry.name,
                        "path": posixpath.join(target.inside, entry.name),
                        "size": info.st_size,
                        "is_directory": stat.S_ISDIR(info.st_mode),
                        "is_symlink": stat.S_ISLNK(info.st_mode),
                        "permissions": stat.filemode(info.st_mode),
                        "modified_time": _iso(info.st_mtime),
                    }
                )
    entries.sort(key=lambda e: (not e["is_directory"], e["name"]))
    return entries, truncated


async def list_files(request: web.Request) -> web.Response:
    """``GET /files/list?path=`` (default ``/workspace``): ``{"files", "count", "path"}``."""
    target = _target(request, _query_path(request, _WORKSPACE))
    files, truncated = await asyncio.to_thread(_listing, target)
    answer: dict[str, Any] = {"files": files, "count": len(files), "path": target.inside}
    if truncated:
        answer["truncated"] = True
    return json_answer(answer)


def _lookup(target: _Target) -> os.stat_result | None:
    with _parent_dir(target, create=False, chown=False) as parent:
        try:
            return os.stat(target.name or ".", dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None


async def file_exists(request: web.Request) -> web.Response:
    """``GET /files/exists?path=``: ``{"exists", "path", "is_directory"}``."""
    target = _target(request, _query_path(request))
    try:
        info = await asyncio.to_thread(_lookup, target)
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


def _mkdir(target: _Target, chown: bool) -> None:
    with _dir_fd(target, target.parts, create=True, chown=chown):
        pass


async def make_dir(request: web.Request) -> web.Response:
    """``POST /files/mkdir`` ``{"path"}``: create a directory and its missing parents."""
    body = await read_body(request)
    target = _target(request, req_str(body, "path"))
    await asyncio.to_thread(_mkdir, target, _chown_new(request))
    return json_answer(_done(target, "directory created"))


def _remove(target: _Target) -> None:
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r}: the workspace itself stays")
    with _parent_dir(target, create=False, chown=False) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                _remove_tree(parent, target.name)
            else:
                os.unlink(target.name, dir_fd=parent)
        except OSError as exc:
            raise _os_error(exc, target) from None


def _remove_tree(parent: int, name: str, depth: int = 0) -> None:
    """Remove a directory tree through fds only: a link planted in it is removed, never
    followed (what ``shutil.rmtree(dir_fd=...)`` does from Python 3.11 on)."""
    if depth > _MAX_TREE_DEPTH:
        raise OSError(errno.ENAMETOOLONG, f"deeper than {_MAX_TREE_DEPTH} directories")
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        with os.scandir(fd) as scan:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in scan]
        for child, is_dir in children:
            if is_dir:
                _remove_tree(fd, child, depth + 1)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


async def remove_file(request: web.Request) -> web.Response:
    """``DELETE /files/remove?path=``: remove a file, a link, or a directory tree."""
    target = _target(request, _query_path(request), follow_last=False)
    await asyncio.to_thread(_remove, target)
    return json_answer(_done(target, "removed"))


# -- upload, download -------------------------------------------------------------------------


async def download_file(request: web.Request) -> web.StreamResponse:
    """``GET /files/download?path=``: the file's bytes, streamed in chunks."""
    target = _target(request, _query_path(request))
    with _open_regular(target, os.O_RDONLY) as (fd, info):
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


def _place(staged_dir: int, staged: str, target: _Target, *, chown: bool) -> None:
    """Move the staged upload to the target (atomically replacing a file there)."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with _parent_dir(target, create=True, chown=chown) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
        try:
            os.rename(staged, target.name, src_dir_fd=staged_dir, dst_dir_fd=parent)
        except OSError as exc:
            raise _os_error(exc, target) from None


async def upload_file(request: web.Request) -> web.Response:
    """``POST /files/upload`` (multipart: ``file``, and ``path`` as a field or a query
    parameter): streamed to disk, then moved into place."""
    if not request.content_type.startswith("multipart/"):
        raise bad_request("the upload must be multipart/form-data with a 'file' part")
    timeout = state(request).read_timeout
    limit = max_upload_bytes()
    chown = _chown_new(request)
    staging = state(request).layout.sandbox_dir(request.match_info["sid"]) / "uploads"
    path = request.query.get("path")
    staged = f".upload-{secrets.token_hex(8)}"
    await asyncio.to_thread(staging.mkdir, mode=0o700, exist_ok=True)
    staged_dir = os.open(staging, _DIR_FLAGS)
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
        await asyncio.to_thread(os.chmod, staged, 0o644, dir_fd=staged_dir)
        if chown:
            await asyncio.to_thread(os.chown, staged, BOX_ID, BOX_ID, dir_fd=staged_dir)
        await asyncio.to_thread(_place, staged_dir, staged, target, chown=chown)
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
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ApiError(507, "INSUFFICIENT_STORAGE", f"upload: {exc.strerror}") from None
        raise
    finally:
        os.close(fd)
    return size
