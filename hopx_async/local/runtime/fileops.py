"""The file operations of ``/files/*`` on a confined ``Target``: read, write, list, look up,
create directories, remove, and move an upload into place. Blocking (the routes run them in
a thread); every open goes through ``workspace``, so no link is ever followed.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import stat
from typing import Any

from ..errors import ApiError, bad_request
from .box import BOX_ID
from .workspace import FILE_FLAGS, Target, dir_fd, open_regular, os_error, parent_dir, remove_tree

__all__ = [
    "MAX_LIST_ENTRIES",
    "MAX_READ_BYTES",
    "iso_seconds",
    "listing",
    "lookup",
    "make_dirs",
    "place",
    "read_text",
    "remove",
    "write",
]

#: ``/files/read`` answers files up to this size (16 MiB); larger ones: ``/files/download``.
MAX_READ_BYTES = 16 * 1024 * 1024
#: ``/files/list`` answers at most this many entries (``truncated`` tells when there were more).
MAX_LIST_ENTRIES = 10_000
_CHUNK = 256 * 1024


def iso_seconds(seconds: float) -> str:
    """ISO-8601 UTC to the second, ending in ``Z``."""
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def read_text(target: Target) -> tuple[str, int]:
    with open_regular(target, os.O_RDONLY) as (fd, info):
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


def write(target: Target, data: bytes, mode: int, *, overwrite: bool, chown: bool) -> None:
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    flags = os.O_WRONLY | os.O_CREAT | (0 if overwrite else os.O_EXCL)
    with parent_dir(target, create=True, chown=chown) as parent:
        try:
            existed = _exists_in(parent, target.name)
            fd = os.open(target.name, flags | FILE_FLAGS, mode, dir_fd=parent)
        except OSError as exc:
            raise os_error(exc, target) from None
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
        raise os_error(exc, target) from None
    finally:
        os.close(fd)


def _exists_in(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def listing(target: Target) -> tuple[list[dict[str, Any]], bool]:
    with dir_fd(target, target.parts, create=False, chown=False) as fd:
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
                        "modified_time": iso_seconds(info.st_mtime),
                    }
                )
    entries.sort(key=lambda e: (not e["is_directory"], e["name"]))
    return entries, truncated


def lookup(target: Target) -> os.stat_result | None:
    with parent_dir(target, create=False, chown=False) as parent:
        try:
            return os.stat(target.name or ".", dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None


def make_dirs(target: Target, chown: bool) -> None:
    with dir_fd(target, target.parts, create=True, chown=chown):
        pass


def remove(target: Target) -> None:
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r}: the workspace itself stays")
    with parent_dir(target, create=False, chown=False) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                remove_tree(parent, target.name)
            else:
                os.unlink(target.name, dir_fd=parent)
        except OSError as exc:
            raise os_error(exc, target) from None


def place(staged_dir: int, staged: str, target: Target, *, chown: bool) -> None:
    """Move the staged upload to the target (atomically replacing a file there)."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with parent_dir(target, create=True, chown=chown) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
        try:
            os.rename(staged, target.name, src_dir_fd=staged_dir, dst_dir_fd=parent)
        except OSError as exc:
            raise os_error(exc, target) from None
