"""Workspace confinement: a path a request names, resolved and opened inside one workspace.

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
planted by sandboxed code cannot stall or feed the server. Everything here works on plain
paths and descriptors (no HTTP); refusals are ``ApiError`` answers (403 ``PATH_FORBIDDEN``,
404, 400 ...), which the routes pass on.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import attrs

from ..errors import ApiError, bad_request
from .box import BOX_ID

__all__ = [
    "DIR_FLAGS",
    "WORKSPACE",
    "Target",
    "dir_fd",
    "open_regular",
    "os_error",
    "parent_dir",
    "remove_tree",
    "resolve",
]

#: The workspace as sandboxed code sees it.
WORKSPACE = "/workspace"
#: Flags of every directory opened on the way: never through a link.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Added to the flags of a file's open: no link, and no wait on a FIFO or a device.
FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINK_HOPS = 40
_MAX_TREE_DEPTH = 256


@attrs.frozen
class Target:
    """A path the request named: the workspace on the host, the resolved components under
    it, and the path as the sandbox sees it (``/workspace/...``)."""

    root: Path
    parts: tuple[str, ...]
    argument: str
    given: str

    @property
    def inside(self) -> str:
        return WORKSPACE + "".join("/" + p for p in self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""


def _forbidden(argument: str, value: str, why: str = "leaves the sandbox's workspace") -> ApiError:
    return ApiError(403, "PATH_FORBIDDEN", f"'{argument}' {value!r} {why} ({WORKSPACE})")


def _lexical_parts(value: str, argument: str) -> list[str]:
    """The components under ``/workspace`` that ``value`` names, before any link is read."""
    if value == "":
        raise bad_request(f"'{argument}' must not be empty")
    if "\x00" in value:
        raise bad_request(f"'{argument}' must not contain NUL characters")
    if value.startswith("/"):
        norm = "/" + posixpath.normpath(value).lstrip("/")
        if norm == WORKSPACE:
            return []
        if not norm.startswith(WORKSPACE + "/"):
            raise _forbidden(argument, value, "is outside the sandbox's workspace")
        relative = norm[len(WORKSPACE) + 1 :]
    else:
        relative = posixpath.normpath(value)
        if relative == ".." or relative.startswith("../"):
            raise _forbidden(argument, value)
        if relative == ".":
            return []
    return relative.split("/")


def resolve(root: Path, value: str, argument: str = "path", *, follow_last: bool = True) -> Target:
    """Resolve ``value`` inside the workspace ``root`` (links too); refuse what leaves it.

    ``argument`` names the value in refusals. With ``follow_last=False`` a link as the last
    component is the target itself (to remove it), not where it leads.
    """
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
            if norm == WORKSPACE or norm.startswith(WORKSPACE + "/"):
                rest = norm[len(WORKSPACE) :]
            elif norm == host_root or norm.startswith(host_root + "/"):
                rest = norm[len(host_root) :]  # a link made outside a box: the host's path
            else:
                raise _forbidden(argument, value, "leads (through a link) outside")
            resolved = []
            pending = rest.split("/") + pending
        else:
            pending = link.split("/") + pending
    return Target(root, tuple(resolved), argument, value)


@contextmanager
def parent_dir(target: Target, *, create: bool, chown: bool) -> Iterator[int]:
    """An fd of the target's parent directory, opened component by component without
    following any link (and creating missing ones when ``create``)."""
    with dir_fd(target, target.parts[:-1], create=create, chown=chown) as fd:
        yield fd


@contextmanager
def dir_fd(target: Target, parts: tuple[str, ...], *, create: bool, chown: bool) -> Iterator[int]:
    try:
        fd = os.open(target.root, DIR_FLAGS)
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
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            if created and chown:
                os.fchown(fd, BOX_ID, BOX_ID)
        yield fd
    except OSError as exc:
        raise os_error(exc, target) from None
    finally:
        os.close(fd)


def os_error(exc: OSError, target: Target) -> ApiError:
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


@contextmanager
def open_regular(target: Target, flags: int) -> Iterator[tuple[int, os.stat_result]]:
    """Open the target's last component (no link followed) and check it is a regular file."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with parent_dir(target, create=False, chown=False) as parent:
        try:
            fd = os.open(target.name, flags | FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise os_error(exc, target) from None
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


def remove_tree(parent: int, name: str, depth: int = 0) -> None:
    """Remove a directory tree through fds only: a link planted in it is removed, never
    followed (what ``shutil.rmtree(dir_fd=...)`` does from Python 3.11 on)."""
    if depth > _MAX_TREE_DEPTH:
        raise OSError(errno.ENAMETOOLONG, f"deeper than {_MAX_TREE_DEPTH} directories")
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        with os.scandir(fd) as scan:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in scan]
        for child, is_dir in children:
            if is_dir:
                remove_tree(fd, child, depth + 1)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
