"""The file operations of ``/files/*`` on a confined ``Target``: read, write, list, look up,
create directories, remove, and move an upload into place. Blocking (the routes run them in
a thread); every open goes through ``workspace``, so no link is ever followed.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import posixpath
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..errors import ApiError, bad_request
from ..state.layout import Layout
from .workspace import (
    DIR_FLAGS,
    FILE_FLAGS,
    Target,
    dir_fd,
    open_regular,
    os_error,
    parent_dir,
    remove_tree,
)

logger = logging.getLogger("hopx_async.local")

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
    "remove_all",
    "sweep",
    "write",
]

#: ``/files/read`` answers files up to this size (16 MiB); larger ones: ``/files/download``.
MAX_READ_BYTES = 16 * 1024 * 1024
#: ``/files/list`` answers at most this many entries (``truncated`` tells when there were more).
MAX_LIST_ENTRIES = 10_000
_CHUNK = 256 * 1024
#: Names of the files being written (in the target's directory) and of their notes (in the
#: sandbox's staging directory), removed at the next start when a crash left them.
WRITE_PREFIX = ".hopx-write-"
_NOTE_PREFIX = ".write-"
_UPLOAD_PREFIX = ".upload-"


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


def write(
    target: Target,
    data: bytes,
    mode: int,
    *,
    overwrite: bool,
    owner: int | None,
    staging: Path | None = None,
) -> None:
    """Write ``data`` to a new file beside the target, flush it to disk, and rename it over
    the target: a crash leaves the old content or the new, never a part. ``staging`` (the
    sandbox's staging directory) keeps a note of the new file until it is renamed, so that
    the next start removes one a crash left. ``owner``: the uid/gid the new file and
    directories are given (None: the server's)."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    temp = WRITE_PREFIX + secrets.token_hex(8)
    note = None if staging is None else staging / (_NOTE_PREFIX + temp[len(WRITE_PREFIX) :])
    with parent_dir(target, create=True, owner=owner) as parent:
        try:
            info = _info_in(parent, target.name)
            if info is not None and not overwrite:
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
            if info is not None and stat.S_ISLNK(info.st_mode):  # swapped in since resolved
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if info is not None and not stat.S_ISREG(info.st_mode):
                raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
            if note is not None:
                note.parent.mkdir(mode=0o700, exist_ok=True)
                note.write_text("/".join((*target.parts[:-1], temp)))
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o600, dir_fd=parent
            )
        except OSError as exc:
            if note is not None:
                with suppress(OSError):
                    note.unlink()
            raise os_error(exc, target) from None
        try:
            try:
                os.set_blocking(fd, True)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view[:_CHUNK]) :]
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, owner, owner)
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.rename(temp, target.name, src_dir_fd=parent, dst_dir_fd=parent)
            else:  # a link fails on an existing name, where a rename would replace it
                os.link(temp, target.name, src_dir_fd=parent, dst_dir_fd=parent)
            os.fsync(parent)
        except OSError as exc:
            raise os_error(exc, target) from None
        finally:
            with suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            if note is not None:
                with suppress(OSError):
                    note.unlink()


def _info_in(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def listing(target: Target) -> tuple[list[dict[str, Any]], bool]:
    with dir_fd(target, target.parts, create=False) as fd:
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
    with parent_dir(target, create=False) as parent:
        try:
            return os.stat(target.name or ".", dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None


def make_dirs(target: Target, owner: int | None) -> None:
    with dir_fd(target, target.parts, create=True, owner=owner):
        pass


def remove(target: Target) -> None:
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r}: the workspace itself stays")
    with parent_dir(target, create=False) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                remove_tree(parent, target.name)
            else:
                os.unlink(target.name, dir_fd=parent)
        except OSError as exc:
            raise os_error(exc, target) from None


def place(staged_dir: int, staged: str, target: Target, *, owner: int | None) -> None:
    """Move the staged upload to the target (atomically replacing a file there)."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with parent_dir(target, create=True, owner=owner) as parent:
        try:
            info = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise bad_request(f"'{target.argument}' {target.given!r} is not a regular file")
        try:
            os.rename(staged, target.name, src_dir_fd=staged_dir, dst_dir_fd=parent)
            os.fsync(parent)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise os_error(exc, target) from None
            _copy_over(staged_dir, staged, parent, target)  # the workspace is an image


def _copy_over(staged_dir: int, staged: str, parent: int, target: Target) -> None:
    """Copy a staged upload to a new file beside the target (owner and mode kept), flush it
    and rename it over the target; a note in the staging directory lets the next start
    remove the copy a crash left. A full workspace fails it whole (the old file stays)."""
    temp = WRITE_PREFIX + secrets.token_hex(8)
    note = _NOTE_PREFIX + temp[len(WRITE_PREFIX) :]
    src = os.open(staged, os.O_RDONLY | FILE_FLAGS, dir_fd=staged_dir)
    try:
        info = os.fstat(src)
        with open(
            os.open(
                note, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o600, dir_fd=staged_dir
            ),
            "w",
        ) as f:
            f.write("/".join((*target.parts[:-1], temp)))
        dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            try:
                os.set_blocking(dst, True)
                os.set_blocking(src, True)
                while chunk := os.read(src, 1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view) :]
                os.fchmod(dst, stat.S_IMODE(info.st_mode))
                os.fchown(dst, info.st_uid, info.st_gid)
                os.fsync(dst)
            finally:
                os.close(dst)
            os.rename(temp, target.name, src_dir_fd=parent, dst_dir_fd=parent)
            os.fsync(parent)
        finally:
            with suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            with suppress(OSError):
                os.unlink(note, dir_fd=staged_dir)
    except OSError as exc:
        raise os_error(exc, target) from None
    finally:
        os.close(src)


def remove_all(path: Path) -> bool:
    """Remove ``path`` and, if it is a directory, everything under it, at any depth and
    without following a link (``shutil.rmtree`` recurses and fails on deep trees). Whether
    it is gone; a failure is logged, and the next start tries again (``sweep``).

    >>> import tempfile
    >>> top = Path(tempfile.mkdtemp())
    >>> (top / "a" / "b").mkdir(parents=True)
    >>> remove_all(top), top.exists()
    (True, False)
    """
    try:
        parent = os.open(path.parent, DIR_FLAGS)
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc.strerror)
        return False
    try:
        info = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            remove_tree(parent, path.name)
        else:
            os.unlink(path.name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc.strerror)
        return False
    finally:
        os.close(parent)
    return True


def sweep(layout: Layout, keep: set[str]) -> None:
    """At start: remove what a crash or a failed deletion left. The directory of a sandbox
    that has no record, upload staging files, and files a write had not renamed yet."""
    try:
        names = os.listdir(layout.root / "sandboxes")
    except OSError:
        return
    for name in names:
        if name.startswith("sbx_") and name not in keep:
            remove_all(layout.sandbox_dir(name))
            continue
        staging = layout.sandbox_dir(name) / "uploads"
        try:
            left = os.listdir(staging)
        except OSError:
            continue
        for entry in left:
            if entry.startswith(_NOTE_PREFIX):
                _drop_partial(layout.workspace(name), staging / entry)
            if entry.startswith((_NOTE_PREFIX, _UPLOAD_PREFIX)):
                with suppress(OSError):
                    os.unlink(staging / entry)


def _drop_partial(workspace: Path, note: Path) -> None:
    try:
        parts = tuple(note.read_text().split("/"))
    except (OSError, UnicodeDecodeError):
        return
    if not parts or not parts[-1].startswith(WRITE_PREFIX):
        return
    target = Target(workspace, parts, "path", "/".join(parts))
    with suppress(OSError, ApiError), parent_dir(target, create=False) as parent:
        os.unlink(parts[-1], dir_fd=parent)
