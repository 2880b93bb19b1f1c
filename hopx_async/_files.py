"""Files in a sandbox (``sandbox.files``) and its environment variables (``sandbox.env``).

Paths are the sandbox's: ``/workspace/...``, or relative to ``/workspace``. Uploads and
downloads stream in chunks, from and to local paths or binary file objects, so a large file
never sits in memory whole.
"""

from __future__ import annotations

import base64
import builtins
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import aiohttp
import anyio
import anyio.to_thread

from . import _validation as validate
from ._connection import AgentConnection
from ._errors import HopxError, ValidationError
from ._results import FileInfo

__all__ = ["AsyncEnv", "AsyncFiles"]

#: how the agent shows the value of a secret-looking variable in ``GET /env``
MASKED = "***MASKED***"
#: bytes per read or write when streaming a file
CHUNK = 256 * 1024


def _remote(argument: str, value: Any) -> str:
    path = validate.non_empty_str(argument, value)
    if "\x00" in path:
        raise ValidationError(argument, "must not contain NUL characters")
    return path


def _mode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return f"{value:04o}"
    if isinstance(value, str):
        try:
            number = int(value, 8)
        except ValueError:
            number = -1
        if 0 <= number <= 0o777:
            return f"{number:04o}"
    raise ValidationError("mode", f"expected permissions such as '0644' or 0o644, got {value!r}")


def _local_path(argument: str, value: Any) -> Path | None:
    """``value`` as a local path, or None when it is a file object."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(os.fspath(value))
        if str(path) == "" or str(path) == ".":
            raise ValidationError(argument, "must name a file")
        return path
    return None


class AsyncFiles:
    """Files in a sandbox: ``sandbox.files``.

    >>> await sandbox.files.write("/workspace/data.csv", "a,b\\n1,2\\n")  # doctest: +SKIP
    >>> await sandbox.files.read("data.csv")  # doctest: +SKIP
    'a,b\\n1,2\\n'
    """

    def __init__(self, agent: AgentConnection) -> None:
        self._agent = agent

    def __repr__(self) -> str:
        return f"<AsyncFiles of {self._agent.sandbox_id}>"

    async def read(self, path: str) -> str:
        """The text of a UTF-8 file (``read_bytes`` for any other content).

        >>> text = await sandbox.files.read("/workspace/out.txt")  # doctest: +SKIP
        """
        params = {"path": _remote("path", path)}
        resp = await self._agent.request("GET", "/files/read", params=params, resource="file")
        content = resp.mapping.get("content")
        if not isinstance(content, str):
            raise HopxError(f"/files/read answered without content: {str(resp.data)[:200]}")
        return content

    async def read_bytes(self, path: str) -> bytes:
        """The bytes of a file (for large files prefer :meth:`download`, which streams).

        >>> data = await sandbox.files.read_bytes("/workspace/plot.png")  # doctest: +SKIP
        """
        params = {"path": _remote("path", path)}
        async with self._agent.stream(
            "GET", "/files/download", params=params, resource="file"
        ) as resp:
            return await resp.read()

    async def write(
        self, path: str, content: str | bytes, *, mode: str | int | None = None
    ) -> None:
        """Create or replace a file with text (``str``) or bytes; parents are created.

        ``mode`` sets its permissions (``"0755"`` or ``0o755``; the server's default is 0644).

        >>> await sandbox.files.write("run.sh", "echo hi\\n", mode="0755")  # doctest: +SKIP
        >>> await sandbox.files.write("blob.bin", b"\\x00\\x01")  # doctest: +SKIP
        """
        body: dict[str, Any] = {"path": _remote("path", path)}
        if isinstance(content, str):
            body["content"] = content
        elif isinstance(content, (bytes, bytearray, memoryview)):
            body["content"] = base64.b64encode(bytes(content)).decode("ascii")
            body["encoding"] = "base64"
        else:
            raise ValidationError("content", f"expected str or bytes, got {type(content).__name__}")
        permissions = _mode(mode)
        if permissions is not None:
            body["mode"] = permissions
        await self._agent.request("POST", "/files/write", json=body, safe=True, resource="file")

    async def list(self, path: str = "/workspace") -> builtins.list[FileInfo]:
        """The entries of a directory, directories first.

        >>> [f.name for f in await sandbox.files.list("/workspace")]  # doctest: +SKIP
        ['src', 'README.md']
        """
        params = {"path": _remote("path", path)}
        resp = await self._agent.request("GET", "/files/list", params=params, resource="file")
        entries = resp.mapping.get("files")
        if not isinstance(entries, builtins.list):
            return []
        return [FileInfo.from_wire(e) for e in entries if isinstance(e, Mapping)]

    async def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``.

        >>> await sandbox.files.exists("/workspace/out.txt")  # doctest: +SKIP
        True
        """
        params = {"path": _remote("path", path)}
        resp = await self._agent.request("GET", "/files/exists", params=params, resource="file")
        return resp.mapping.get("exists") is True

    async def remove(self, path: str) -> None:
        """Remove a file, a link, or a directory with everything in it.

        >>> await sandbox.files.remove("/workspace/build")  # doctest: +SKIP
        """
        params = {"path": _remote("path", path)}
        await self._agent.request("DELETE", "/files/remove", params=params, resource="file")

    async def mkdir(self, path: str) -> None:
        """Create a directory and its missing parents (no error if it exists).

        >>> await sandbox.files.mkdir("/workspace/data/raw")  # doctest: +SKIP
        """
        body = {"path": _remote("path", path)}
        await self._agent.request("POST", "/files/mkdir", json=body, safe=True, resource="file")

    async def upload(self, source: str | os.PathLike[str] | IO[bytes], remote_path: str) -> int:
        """Upload a local file (a path, or a binary file object read from its current
        position) to ``remote_path``, streamed in chunks; returns the bytes sent.

        >>> await sandbox.files.upload("data.parquet", "/workspace/data.parquet")  # doctest: +SKIP
        1048576
        """
        remote = _remote("remote_path", remote_path)
        local = _local_path("source", source)
        if local is None and not callable(getattr(source, "read", None)):
            raise ValidationError("source", "expected a path or a binary file object")
        if local is not None and not await anyio.to_thread.run_sync(local.is_file):
            raise ValidationError("source", f"{str(local)!r} is not a file")
        if local is not None:
            fileobj: IO[bytes] = await anyio.to_thread.run_sync(local.open, "rb")
        else:
            fileobj = cast("IO[bytes]", source)
        filename = local.name if local is not None else os.path.basename(remote) or "file"
        sent = [0]
        start = _position(fileobj)
        calls = 0

        def form() -> aiohttp.MultipartWriter:
            nonlocal calls
            if calls:  # the one resend after a token refresh
                if start is None:
                    raise HopxError("the upload cannot be resent: its file object cannot seek")
                fileobj.seek(start)
                sent[0] = 0
            calls += 1
            writer = aiohttp.MultipartWriter("form-data")
            writer.append(remote).set_content_disposition("form-data", name="path")
            part = writer.append(
                _chunks(fileobj, sent), {"Content-Type": "application/octet-stream"}
            )
            part.set_content_disposition("form-data", name="file", filename=filename)
            return writer

        try:
            async with self._agent.stream("POST", "/files/upload", body=form, resource="file"):
                pass
        finally:
            if local is not None:
                await anyio.to_thread.run_sync(fileobj.close)
        return sent[0]

    async def download(
        self, remote_path: str, destination: str | os.PathLike[str] | IO[bytes]
    ) -> int:
        """Download a file to a local path (replaced whole once complete) or into a binary
        file object, streamed in chunks; returns the bytes received.

        >>> await sandbox.files.download("/workspace/results.tar", "results.tar")  # doctest: +SKIP
        52428800
        """
        params = {"path": _remote("remote_path", remote_path)}
        local = _local_path("destination", destination)
        if local is None and not callable(getattr(destination, "write", None)):
            raise ValidationError("destination", "expected a path or a binary file object")
        if local is not None and not await anyio.to_thread.run_sync(local.parent.is_dir):
            raise ValidationError("destination", f"the directory of {str(local)!r} does not exist")
        received = 0
        async with self._agent.stream(
            "GET", "/files/download", params=params, resource="file"
        ) as resp:
            if local is None:
                sink = cast("IO[bytes]", destination)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await anyio.to_thread.run_sync(sink.write, chunk)
                    received += len(chunk)
                return received
            partial = local.with_name(f".{local.name}.{secrets.token_hex(4)}.part")
            try:
                async with await anyio.open_file(partial, "wb") as out:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        await out.write(chunk)
                        received += len(chunk)
                await anyio.to_thread.run_sync(os.replace, partial, local)
            finally:
                await anyio.to_thread.run_sync(_unlink_quietly, partial)
        return received


def _position(fileobj: IO[bytes]) -> int | None:
    try:
        return fileobj.tell() if fileobj.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _chunks(fileobj: IO[bytes], sent: builtins.list[int]) -> AsyncIterator[bytes]:
    while True:
        chunk = await anyio.to_thread.run_sync(fileobj.read, CHUNK)
        if not chunk:
            return
        if not isinstance(chunk, bytes):
            raise ValidationError("source", "the file object must be opened in binary mode")
        sent[0] += len(chunk)
        yield chunk


def _env_map(argument: str, value: Any) -> dict[str, str]:
    checked = validate.env_vars(argument, value)
    if checked is None:
        raise ValidationError(argument, "expected a mapping of names to strings")
    return checked


class AsyncEnv:
    """The environment variables every new process of a sandbox gets: ``sandbox.env``.

    ``get_all()`` shows the sandbox's whole base environment (``PATH``, ``HOME``, ...) and
    the variables set on it; values of secret-looking names come back masked.

    >>> await sandbox.env.update({"DEBUG": "1"})  # doctest: +SKIP
    >>> await sandbox.env.get("DEBUG")  # doctest: +SKIP
    '1'
    """

    def __init__(self, agent: AgentConnection) -> None:
        self._agent = agent

    def __repr__(self) -> str:
        return f"<AsyncEnv of {self._agent.sandbox_id}>"

    async def get_all(self) -> dict[str, str]:
        """Every variable, secrets masked as ``***MASKED***``.

        >>> (await sandbox.env.get_all())["HOME"]  # doctest: +SKIP
        '/workspace'
        """
        resp = await self._agent.request("GET", "/env")
        found = resp.mapping.get("env_vars")
        if not isinstance(found, Mapping):
            return {}
        return {str(k): str(v) for k, v in found.items() if v is not None}

    async def get(self, name: str) -> str | None:
        """One variable's value, or None when it is not set.

        >>> await sandbox.env.get("PATH")  # doctest: +SKIP
        '/usr/local/bin:/usr/bin:/bin'
        """
        validate.non_empty_str("name", name)
        return (await self.get_all()).get(name)

    async def set(self, variables: Mapping[str, str]) -> None:
        """Replace the sandbox's variables with ``variables`` (others set before are gone).

        >>> await sandbox.env.set({"MODE": "batch"})  # doctest: +SKIP
        """
        body = {"env_vars": _env_map("variables", variables)}
        await self._agent.request("PUT", "/env", json=body, safe=True)

    async def update(self, variables: Mapping[str, str]) -> None:
        """Add or change ``variables``, keeping the others.

        >>> await sandbox.env.update({"DEBUG": "1"})  # doctest: +SKIP
        """
        body = {"env_vars": _env_map("variables", variables), "merge": True}
        await self._agent.request("PATCH", "/env", json=body, safe=True)

    async def delete(self, name: str) -> None:
        """Remove one variable (no error if it is not set).

        Where the agent has no ``env_delete_keys``, the rest is written back with a PUT; when
        any other variable reads ``***MASKED***`` that would corrupt it, so
        :class:`HopxError` is raised instead and nothing is changed.

        >>> await sandbox.env.delete("DEBUG")  # doctest: +SKIP
        """
        validate.non_empty_str("name", name)
        await self._agent.ensure_ready()
        if self._agent.has_feature("env_delete_keys"):
            await self._agent.request("DELETE", "/env", json={"keys": [name]})
            return
        # The service's DELETE /env clears every variable: put back all but this one.
        current = await self.get_all()
        if name in current:
            del current[name]
            masked = sorted(k for k, v in current.items() if v == MASKED)
            if masked:  # a PUT would store the mask in place of these secrets
                raise HopxError(
                    f"cannot delete {name!r}: this server can only replace the whole "
                    f"environment, and it shows {', '.join(masked)} masked, so writing it back "
                    "would overwrite those secrets with the mask; use env.set() with every value"
                )
            await self._agent.request("PUT", "/env", json={"env_vars": current}, safe=True)
