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

__all__ = [
    "DIR_FLAGS",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "MAX_PATH_DEPTH",
    "STORAGE_ERRNOS",
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
#: The longest path a request may name, in bytes (the kernel's ``PATH_MAX``).
MAX_PATH_BYTES = 4096
#: The longest component of a path, in bytes (the kernel's ``NAME_MAX``).
MAX_NAME_BYTES = 255
#: The most directories a path may lead through under ``/workspace``.
MAX_PATH_DEPTH = 256
_MAX_LINK_HOPS = 40
#: Directories held open at once while a tree is removed; deeper ones are moved up first.
_HELD_DIRS = 64


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


def _check_length(value: str, argument: str) -> None:
    """Refuse, before any I/O, a path the kernel would refuse or that is too deep to work on."""
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:
        raise bad_request(f"'{argument}' is not a valid file name (unpaired surrogates)") from None
    if len(raw) > MAX_PATH_BYTES:
        raise ApiError(400, "PATH_TOO_LONG", f"'{argument}' is longer than {MAX_PATH_BYTES} bytes")
    names = [n for n in raw.split(b"/") if n not in (b"", b".")]
    if any(len(n) > MAX_NAME_BYTES for n in names):
        raise ApiError(
            400,
            "PATH_TOO_LONG",
            f"'{argument}' has a component longer than {MAX_NAME_BYTES} bytes",
        )
    if len(names) > MAX_PATH_DEPTH + 1:
        raise ApiError(
            400, "PATH_TOO_LONG", f"'{argument}' is deeper than {MAX_PATH_DEPTH} directories"
        )


def _lexical_parts(value: str, argument: str) -> list[str]:
    """The components under ``/workspace`` that ``value`` names, before any link is read."""
    if value == "":
        raise bad_request(f"'{argument}' must not be empty")
    if "\x00" in value:
        raise bad_request(f"'{argument}' must not contain NUL characters")
    _check_length(value, argument)
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


def _link_rest(link: str, host_root: str) -> str | None:
    """What an absolute link target names under the workspace (``None``: outside it)."""
    norm = "/" + posixpath.normpath(link).lstrip("/")
    if norm == WORKSPACE or norm.startswith(WORKSPACE + "/"):
        return norm[len(WORKSPACE) :]
    if norm == host_root or norm.startswith(host_root + "/"):
        return norm[len(host_root) :]  # a link made outside a box: the host's path
    return None


def resolve(root: Path, value: str, argument: str = "path", *, follow_last: bool = True) -> Target:
    """Resolve ``value`` inside the workspace ``root`` (links too); refuse what leaves it.

    ``argument`` names the value in refusals. With ``follow_last=False`` a link as the last
    component is the target itself (to remove it), not where it leads. The walk holds a
    descriptor of each directory on the way (opened without following a link) and reads
    each link through the descriptor of its directory, so a component that sandboxed code
    swaps meanwhile can fail the request (403, 404), never redirect it.
    """
    pending = _lexical_parts(value, argument)
    host_root = os.path.realpath(root)
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ApiError(404, "FILE_NOT_FOUND", "the sandbox's workspace is gone") from None
        raise os_error(exc, Target(root, (), argument, value)) from None
    held: list[int] = []  # held[i]: the directory resolved[: i + 1], while nothing is missing
    resolved: list[str] = []
    hops = 0
    missing = False
    try:
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":  # only from a link target, so nothing is missing yet
                if not resolved:
                    raise _forbidden(argument, value, "leads (through a link) outside")
                resolved.pop()
                os.close(held.pop())
                continue
            if missing or (not pending and not follow_last):
                resolved.append(name)
                continue
            here = held[-1] if held else root_fd
            try:
                info = os.stat(name, dir_fd=here, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                missing = True  # the rest is created or answered 404 by the strict open
                resolved.append(name)
                continue
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise bad_request(f"'{argument}' {value!r}: too many levels of symbolic links")
                link = os.readlink(name, dir_fd=here)
                if link.startswith("/"):
                    rest = _link_rest(link, host_root)
                    if rest is None:
                        raise _forbidden(argument, value, "leads (through a link) outside")
                    while held:
                        os.close(held.pop())
                    resolved = []
                    pending = rest.split("/") + pending
                else:
                    pending = link.split("/") + pending
                continue
            resolved.append(name)
            if len(resolved) > MAX_PATH_DEPTH + 1:
                raise ApiError(
                    400,
                    "PATH_TOO_LONG",
                    f"'{argument}' {value!r} leads deeper than {MAX_PATH_DEPTH} directories",
                )
            if pending:
                if not stat.S_ISDIR(info.st_mode):
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
                held.append(os.open(name, DIR_FLAGS, dir_fd=here))
    except OSError as exc:
        raise os_error(exc, Target(root, (), argument, value)) from None
    finally:
        for fd in held:
            os.close(fd)
        os.close(root_fd)
    if len(resolved) > MAX_PATH_DEPTH + 1:  # links can lead deeper than the path named
        raise ApiError(
            400,
            "PATH_TOO_LONG",
            f"'{argument}' {value!r} leads deeper than {MAX_PATH_DEPTH} directories",
        )
    return Target(root, tuple(resolved), argument, value)


@contextmanager
def parent_dir(target: Target, *, create: bool, owner: int | None = None) -> Iterator[int]:
    """An fd of the target's parent directory, opened component by component without
    following any link (and creating missing ones when ``create``, given to the uid/gid
    ``owner`` unless it is None)."""
    with dir_fd(target, target.parts[:-1], create=create, owner=owner) as fd:
        yield fd


@contextmanager
def dir_fd(
    target: Target, parts: tuple[str, ...], *, create: bool, owner: int | None = None
) -> Iterator[int]:
    try:
        fd = os.open(target.root, DIR_FLAGS)
    except FileNotFoundError:
        raise ApiError(404, "FILE_NOT_FOUND", "the sandbox's workspace is gone") from None
    except OSError as exc:
        raise os_error(exc, target) from None
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
            if created and owner is not None:
                os.fchown(fd, owner, owner)
        yield fd
    except OSError as exc:
        raise os_error(exc, target) from None
    finally:
        os.close(fd)


#: Errors that mean the data could not be stored (507): no space (in the workspace's image,
#: or on the host disk), a quota, a file size limit, or an image that failed because the host
#: disk filled up under it (an I/O error, then a read-only file system).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def os_error(exc: OSError, target: Target) -> ApiError:
    """The answer to an OS error on the target: always a documented error, never a host path
    (only the error's description is kept, not the file names it carries)."""
    where = f"'{target.argument}' {target.given!r}"
    if exc.errno == errno.ENAMETOOLONG:
        return ApiError(400, "PATH_TOO_LONG", f"{where}: file name too long")
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
    if exc.errno in STORAGE_ERRNOS:
        return ApiError(507, "INSUFFICIENT_STORAGE", f"{where}: {exc.strerror}")
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else "cannot be used")
    return bad_request(f"{where}: {reason}")


@contextmanager
def open_regular(target: Target, flags: int) -> Iterator[tuple[int, os.stat_result]]:
    """Open the target's last component (no link followed) and check it is a regular file."""
    if not target.parts:
        raise bad_request(f"'{target.argument}' {target.given!r} is a directory")
    with parent_dir(target, create=False) as parent:
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


def remove_tree(parent: int, name: str) -> None:
    """Remove the directory ``name`` of ``parent`` and everything under it, through fds only:
    a link planted in it is removed, never followed. No recursion, and at most
    ``_HELD_DIRS`` directories open at once: a directory deeper than that is first moved up
    to the top of the tree (a rename in the same tree), so any depth is removed."""
    top = os.open(name, DIR_FLAGS, dir_fd=parent)
    held: list[tuple[int, str]] = [(top, name)]  # (fd, its name in the directory below)
    moved = 0
    try:
        while held:
            fd, own = held[-1]
            child = _empty_out(fd)
            if child is None:
                held.pop()
                os.close(fd)
                below = held[-1][0] if held else parent
                with suppress(FileNotFoundError):
                    os.rmdir(own, dir_fd=below)
                continue
            if len(held) >= _HELD_DIRS and fd != top:
                moved += 1
                up = f".removing-{moved}"
                try:
                    os.rename(child, up, src_dir_fd=fd, dst_dir_fd=top)
                    continue
                except OSError:
                    pass  # moved away or a mount: go down instead
            try:
                held.append((os.open(child, DIR_FLAGS, dir_fd=fd), child))
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                with suppress(FileNotFoundError):  # swapped for a link or a file meanwhile
                    os.unlink(child, dir_fd=fd)
    finally:
        for fd, _ in held:
            os.close(fd)


def _empty_out(fd: int) -> str | None:
    """Unlink every non-directory in ``fd``; the name of a subdirectory left, or ``None``."""
    with os.scandir(fd) as scan:
        for entry in scan:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            with suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=fd)
    return None
