"""A loopback HTTP proxy in front of the local backend, for what a real server cannot do on demand.

It forwards every request to the backend unchanged and rewrites the backend's URL in the
answers (so ``public_host`` points back at the proxy). Tests use it to count the requests
the server received and to inject faults: an error answer before forwarding (a 503 burst, a
429, an expired token), an error answer *after* the backend handled the request (the
request reached the server but the client saw a 503), and hiding the extensions the local
backend advertises (to exercise the code paths used against the real service).

``strip_output=True`` removes ``stdout``/``stderr`` (and their ``*_truncated`` flags) from
the process records it forwards, as the OpenAPI ``ProcessInfo`` has none (a stand-in for the
``openapi`` dialect until it is merged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import attrs
from aiohttp import web

from hopx_async import AsyncHopx, RetryPolicy


@attrs.define
class Fault:
    """Answer ``status``/``body`` to requests matching ``method`` and ``path`` (a regex).

    ``after=True`` forwards the request first and then answers the fault instead of the
    backend's answer. ``status=0`` drops the connection without answering. ``times`` is how
    many matching requests get the fault.
    """

    method: str
    path: str
    status: int
    body: dict[str, Any] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    times: int = 1
    after: bool = False
    #: answer this text instead of the JSON body (``{upstream}`` is replaced by the
    #: backend's JSON answer to the forwarded request, for ``after=True``)
    text: str | None = None
    #: only requests for which this is true get the fault (e.g. a strict dialect's 400 for a
    #: required query parameter that is missing)
    when: Callable[[web.Request], bool] | None = None
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        return (
            self.hits < self.times
            and request.method == self.method
            and re.search(self.path, request.path) is not None
            and (self.when is None or self.when(request))
        )


def route_key(method: str, path: str) -> str:
    """``GET /execute/processes`` for ``/sandboxes/sbx_1/execute/processes``."""
    path = re.sub(r"^/sandboxes/[^/]+", "", path)
    path = re.sub(r"/(proc|sbx)_[A-Za-z0-9_-]+", r"/{\1}", path)
    return f"{method} {path}"


class FaultProxy:
    """Run with ``async with FaultProxy(backend.base_url) as proxy:``; point clients at
    ``proxy.url``. ``proxy.counts`` counts received requests by :func:`route_key`."""

    def __init__(
        self, upstream: str, *, hide_features: bool = False, strip_output: bool = False
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.hide_features = hide_features
        self.strip_output = strip_output
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.log: list[str] = []
        self.on_request: Callable[[web.Request], None] | None = None
        #: rewrite a forwarded request's JSON body: ``(route key, body) -> body`` (e.g. drop
        #: the fields a strict dialect ignores); ``bodies`` keeps what clients sent, by key
        self.rewrite_request: Callable[[str, Any], Any] | None = None
        #: rewrite a JSON answer: ``(route key, status, data) -> (status, data)``
        self.rewrite_answer: Callable[[str, int, Any], tuple[int, Any]] | None = None
        self.bodies: dict[str, list[Any]] = {}
        #: seconds to hold the answer to a request after the backend handled it, by route key
        #: (a start whose answer is still in flight when its client dies)
        self.hold: Callable[[str], float] | None = None
        self._released = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def release(self) -> None:
        """Stop holding answers (see ``hold``): the held ones are answered now."""
        self.hold = None
        self._released.set()

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    async def __aenter__(self) -> FaultProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def count(self, method: str, path: str) -> int:
        return self.counts[f"{method} {path}"]

    @staticmethod
    def _fault_answer(request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.status == 0:  # drop the connection without an answer
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped by the test proxy")
        if fault.text is not None:
            return web.Response(text=fault.text, status=fault.status, headers=fault.headers)
        return web.json_response(fault.body, status=fault.status, headers=fault.headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = route_key(request.method, request.path)
        self.counts[key] += 1
        self.log.append(key)
        if self.on_request is not None:
            self.on_request(request)
        fault = next((f for f in self.faults if f.matches(request)), None)
        if fault is not None:
            fault.hits += 1
        if fault is not None and not fault.after:
            return self._fault_answer(request, fault)
        assert self._session is not None
        body = await request.read()
        if body and request.content_type == "application/json":
            sent = json.loads(body)
            self.bodies.setdefault(key, []).append(sent)
            if self.rewrite_request is not None:
                body = json.dumps(self.rewrite_request(key, sent)).encode()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            content_type = upstream.headers.get("Content-Type", "")
            passthrough = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower().startswith("x-") or k.lower() == "retry-after"
            }
        delay = self.hold(key) if self.hold is not None else 0.0
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), delay)
        if fault is not None:
            if fault.text is not None and "{upstream}" in fault.text:
                data = json.loads(payload)
                fault = attrs.evolve(fault, text=fault.text.format(upstream=data.get("process_id")))
            return self._fault_answer(request, fault)
        text = payload.decode("utf-8", "replace").replace(self.upstream, self.url)
        if self.hide_features and key == "GET /health" and status == 200:
            data = json.loads(text)
            data["features"] = {}
            text = json.dumps(data)
        if self.strip_output and key.startswith("GET /execute/processes") and status == 200:
            text = json.dumps(_without_output(json.loads(text)))
        if self.rewrite_answer is not None and content_type.startswith("application/json"):
            status, data = self.rewrite_answer(key, status, json.loads(text))
            text = json.dumps(data)
        return web.Response(
            text=text,
            status=status,
            headers=passthrough,
            content_type=content_type.split(";")[0] or None,
        )


_OUTPUT_FIELDS = ("stdout", "stderr", "stdout_truncated", "stderr_truncated")


def _without_output(data: Any) -> Any:
    """``data`` (a process record, a list of them, or an answer holding them) without the
    output fields."""
    if isinstance(data, list):
        return [_without_output(item) for item in data]
    if isinstance(data, dict):
        if "process_id" in data:
            return {k: v for k, v in data.items() if k not in _OUTPUT_FIELDS}
        return {k: _without_output(v) for k, v in data.items()}
    return data


def fast_client(backend: Any, url: str, retries: int = 4) -> AsyncHopx:
    """A client of ``backend`` at ``url`` (the proxy's) whose retries are quick."""
    return AsyncHopx(
        api_key=backend.api_key,
        base_url=url,
        retries=RetryPolicy(max_retries=retries, initial_delay=0.01, max_delay=0.05),
    )
