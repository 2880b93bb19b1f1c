"""Helpers for driving the local backend over real HTTP with plain aiohttp."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import attrs
import pytest

PY = sys.executable


@attrs.define
class Answer:
    status: int
    body: Any
    headers: Any

    def expect_error(self, status: int, code: str) -> dict[str, Any]:
        assert self.status == status, (self.status, self.body)
        assert isinstance(self.body, dict), self.body
        assert self.body["code"] == code, self.body
        assert isinstance(self.body["error"], str)
        assert self.body["error"]
        assert self.body["request_id"] == self.headers["X-Request-ID"]
        assert self.body["request_id"].startswith("req_")
        return self.body


@attrs.define
class Sandbox:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def host(self) -> str:
        return str(self.data["public_host"]).rstrip("/")

    @property
    def token(self) -> str:
        return str(self.data["auth_token"])


@attrs.define
class Api:
    session: aiohttp.ClientSession
    base_url: str
    api_key: str

    async def raw(self, method: str, url: str, **kwargs: Any) -> Answer:
        async with self.session.request(method, url, **kwargs) as resp:
            text = await resp.text()
            body: Any = None
            if text:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = text
            assert resp.headers["X-Request-ID"].startswith("req_")
            return Answer(resp.status, body, resp.headers)

    async def cp(self, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {"X-API-Key": self.api_key, **kwargs.pop("headers", {})}
        return await self.raw(method, self.base_url + path, headers=headers, **kwargs)

    async def agent(self, sbx: Sandbox, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {"Authorization": f"Bearer {sbx.token}", **kwargs.pop("headers", {})}
        return await self.raw(method, sbx.host + path, headers=headers, **kwargs)

    async def create(self, **body: Any) -> Sandbox:
        body.setdefault("template_name", "code-interpreter")
        answer = await self.cp("POST", "/v1/sandboxes", json=body)
        assert answer.status == 201, answer.body
        return Sandbox(answer.body)

    async def background(self, sbx: Sandbox, code: str, **body: Any) -> dict[str, Any]:
        answer = await self.agent(sbx, "POST", "/execute/background", json={"code": code, **body})
        assert answer.status == 200, answer.body
        return dict(answer.body)

    async def command(self, sbx: Sandbox, command: str, **body: Any) -> dict[str, Any]:
        answer = await self.agent(
            sbx, "POST", "/commands/background", json={"command": command, **body}
        )
        assert answer.status == 200, answer.body
        return dict(answer.body)

    async def process(self, sbx: Sandbox, process_id: str, query: str = "") -> dict[str, Any]:
        answer = await self.agent(sbx, "GET", f"/execute/processes/{process_id}{query}")
        assert answer.status == 200, answer.body
        return dict(answer.body)

    async def wait_done(self, sbx: Sandbox, process_id: str, seconds: float = 20) -> dict[str, Any]:
        """Long-poll one process until it is in a terminal state."""
        terminal = {"completed", "failed", "killed", "timeout"}
        loop_until = seconds
        while loop_until > 0:
            proc = await self.process(sbx, process_id, "?wait=10")
            if proc["status"] in terminal:
                return proc
            loop_until -= 10
        raise AssertionError(f"{process_id} did not finish: {proc}")


def outside_address() -> str:
    """This machine's non-loopback IPv4 address, the one its default route leaves from (the
    test is skipped without one)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("203.0.113.1", 9))  # a datagram socket: no packet is sent
            address = str(probe.getsockname()[0])
    except OSError as exc:
        pytest.skip(f"no non-loopback IPv4 address here: {exc}")
    if address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address here")
    return address


def marker() -> str:
    """A unique extra ``sleep`` argument (``sleep 60 0.0123456781`` sleeps 60.01... s).

    It finds the process on the host from its command line, whatever PID namespace it is in.
    """
    return f"0.0{secrets.randbelow(10**8):08d}1"


def processes() -> Iterator[tuple[int, list[bytes], list[str]]]:
    """Every process in ``/proc``: its pid, argv, and the fields of its stat line after the
    command name (``[0]`` the state, ``[1]`` the parent's pid)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        yield int(entry), argv, fields


def pids_with_arg(arg: str) -> list[int]:
    """Host pids of live (non-zombie) processes that have ``arg`` in their argv.

    The ``bwrap`` processes carrying a box (whose argv holds the command) do not count.
    """
    return [
        pid
        for pid, argv, fields in processes()
        if arg.encode() in argv and fields[:1] != ["Z"] and not argv[0].endswith(b"bwrap")
    ]


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``check`` until it is true (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _raw_http(base_url: str, request: bytes, *, wait: float = 30) -> tuple[int, Any]:
    """Send bytes as they are; read the whole answer (the server closes or says its length)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        status = int(head.split(b" ", 2)[1])
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        body = await asyncio.wait_for(
            reader.readexactly(length) if length is not None else reader.read(), wait
        )
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")
    finally:
        writer.close()


def _request(method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
