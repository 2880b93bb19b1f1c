"""A real aiohttp webhook receiver on loopback, for the webhook tests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import attrs
from aiohttp import web


@attrs.define
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


def free_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused until it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """Records every request; answers each path with the next status of its script (then 200).

    ``answers={"/hook": [500]}`` answers the first POST to ``/hook`` with 500, later ones 200.
    A status in 300-399 redirects to ``/elsewhere``.
    """

    def __init__(self, port: int = 0, answers: dict[str, list[int]] | None = None) -> None:
        self.port = port
        self.answers = {path: list(statuses) for path, statuses in (answers or {}).items()}
        self.hits: list[Hit] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path, dict(request.headers), await request.read())
        async with self._arrived:
            self.hits.append(hit)
            self._arrived.notify_all()
        script = self.answers.get(request.path, [])
        status = script.pop(0) if script else 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": f"{self.url}/elsewhere"})
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def hits_to(self, path: str, count: int, seconds: float = 30) -> list[Hit]:
        """Wait until ``count`` requests reached ``path`` (bounded); return them."""

        def arrived() -> bool:
            return len([h for h in self.hits if h.path == path]) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(arrived), seconds)
        return [h for h in self.hits if h.path == path]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
