"""``hopx cp``: copy a file into a sandbox or out of it, streamed, with progress."""

from __future__ import annotations

import os
import posixpath
import re
import sys
from pathlib import Path
from typing import IO, cast

import attrs
import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hopx_async import AsyncSandbox, FileInfo, NotFoundError

from ._common import EXIT_OK, EXIT_USAGE, CliError, Settings, arun
from ._group import cli, pass_settings
from ._lookup import connect_running
from ._output import err_console

#: files at least this large get a progress bar (when stderr is a terminal)
PROGRESS_FROM = 1 << 20
#: ``SANDBOX:PATH``: an id (no ``/``, no ``:``), a colon, a path
_REMOTE = re.compile(r"^(?P<sandbox>[A-Za-z0-9_.-]+):(?P<path>.*)$")
WORKSPACE = "/workspace"


@attrs.frozen
class Remote:
    """A path in a sandbox, from ``SANDBOX:PATH`` (a relative path is under /workspace)."""

    sandbox_id: str
    path: str

    def __str__(self) -> str:
        return f"{self.sandbox_id}:{self.path}"


def parse_location(text: str) -> Remote | Path:
    """``sbx_1:/workspace/a`` is a sandbox's path; anything else (``./a:b`` too) is local."""
    found = _REMOTE.match(text)
    if found is None:
        return Path(text)
    path = found["path"]  # empty: the workspace itself
    return Remote(found["sandbox"], path if path.startswith("/") else f"{WORKSPACE}/{path}")


@cli.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@pass_settings
def cp(settings: Settings, source: str, destination: str) -> int:
    """Copy a file into a sandbox or out of it: one side is SANDBOX:PATH.

    \b
      hopx cp data.csv sbx_abc:/workspace/data.csv
      hopx cp sbx_abc:/workspace/out.png .
    A relative PATH is under /workspace (SANDBOX: alone is /workspace itself); a
    destination that is a directory (or ends in /) gets the source's name. The file
    is streamed, never held in memory; files of 1 MiB or more show a progress bar
    when stderr is a terminal. A local path with a colon is written ./a:b.
    """
    src, dst = parse_location(source), parse_location(destination)
    if isinstance(src, Remote) == isinstance(dst, Remote):
        raise CliError(
            "give one side as SANDBOX:PATH and the other as a local path "
            f"(got {'two sandbox paths' if isinstance(src, Remote) else 'two local paths'})",
            EXIT_USAGE,
        )
    if isinstance(src, Path):
        assert isinstance(dst, Remote)
        return _upload(settings, src, dst, dst.path.endswith("/"))
    assert isinstance(src, Remote)
    assert isinstance(dst, Path)
    return _download(settings, src, dst, destination.endswith("/"))


def _upload(settings: Settings, src: Path, dst: Remote, into_dir: bool) -> int:
    if not src.is_file():
        what = "a directory (copy files one by one)" if src.is_dir() else "not a file"
        raise CliError(f"{src} is {what}", EXIT_USAGE)

    async def go(f: IO[bytes], size: int) -> int:
        async with settings.client() as client:
            sandbox = await connect_running(client, dst.sandbox_id)
            path = dst.path.rstrip("/") or "/"
            if into_dir or await _is_directory(sandbox, path):
                path = posixpath.join(path, src.name)
            with _Meter(f"{src.name} → {dst.sandbox_id}:{path}", size) as meter:
                await sandbox.files.upload(cast("IO[bytes]", meter.reader(f)), path)
        return EXIT_OK

    with src.open("rb") as f:
        return arun(go(f, os.fstat(f.fileno()).st_size))


def _download(settings: Settings, src: Remote, dst: Path, into_dir: bool) -> int:
    target = dst / posixpath.basename(src.path) if into_dir or dst.is_dir() else dst
    if not target.parent.is_dir():
        raise CliError(f"the directory of {target} does not exist", EXIT_USAGE)

    async def go(f: IO[bytes]) -> int:
        async with settings.client() as client:
            sandbox = await connect_running(client, src.sandbox_id)
            size = await _size_of(sandbox, src.path)
            with _Meter(f"{src} → {target}", size) as meter:
                await sandbox.files.download(src.path, cast("IO[bytes]", meter.writer(f)))
        return EXIT_OK

    partial = target.with_name(f".{target.name}.hopx-part")
    try:
        with partial.open("wb") as f:
            code = arun(go(f))
        os.replace(partial, target)
        return code
    finally:
        partial.unlink(missing_ok=True)


async def _entry(sandbox: AsyncSandbox, path: str) -> FileInfo | None:
    """The entry of ``path`` in its directory's listing (None: not there)."""
    parent, name = posixpath.split(path.rstrip("/"))
    if not name or path.rstrip("/") == WORKSPACE:
        return FileInfo(name=name or "/", path=path, is_directory=True)
    try:
        entries = await sandbox.files.list(parent or "/")
    except NotFoundError:
        return None
    return next((e for e in entries if e.name == name), None)


async def _is_directory(sandbox: AsyncSandbox, path: str) -> bool:
    found = await _entry(sandbox, path)
    return found is not None and found.is_directory


async def _size_of(sandbox: AsyncSandbox, path: str) -> int:
    found = await _entry(sandbox, path)
    if found is None:
        raise CliError(f"{sandbox.id}:{path}: no such file")
    if found.is_directory:
        raise CliError(f"{sandbox.id}:{path} is a directory (copy files one by one)", EXIT_USAGE)
    return found.size


class _Meter:
    """Counts the bytes through a file object; a progress bar on stderr for large files."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        show = sys.stderr.isatty() and (total is None or total >= PROGRESS_FROM)
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            if show
            else None
        )
        self._task: TaskID | None = None

    def __enter__(self) -> _Meter:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def count(self, n: int) -> None:
        self.done += n
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done)

    def reader(self, f: IO[bytes]) -> _Reader:
        return _Reader(f, self)

    def writer(self, f: IO[bytes]) -> _Writer:
        return _Writer(f, self)


class _Reader:
    """A binary file's ``read`` (and position), counting what is read."""

    def __init__(self, f: IO[bytes], meter: _Meter) -> None:
        self._f = f
        self._meter = meter

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._meter.count(len(data))
        return data

    def seekable(self) -> bool:
        return self._f.seekable()

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        self._meter.done = 0
        return self._f.seek(offset, whence)


class _Writer:
    """A binary file's ``write``, counting what is written."""

    def __init__(self, f: IO[bytes], meter: _Meter) -> None:
        self._f = f
        self._meter = meter

    def write(self, data: bytes) -> int:
        written = self._f.write(data)
        self._meter.count(len(data))
        return written
