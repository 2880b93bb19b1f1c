"""AsyncHopx: the client. It owns the connection pool shared by all of its sandboxes."""

from __future__ import annotations

import asyncio
import builtins
import os
import sys
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

from . import _validation as validate
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, resolve_api_key, resolve_base_url
from ._errors import ProcessFailedError, ValidationError, WaitTimeoutError
from ._models import ProcessResult, ProcessStatus, SandboxInfo, Template
from ._process import AsyncBackgroundProcess
from ._sandbox import AsyncSandbox, _create_body
from ._transport import Response, Transport
from ._utils import AwaitableContext

__all__ = ["AsyncHopx", "AsyncSandboxes"]

ProgressCallback = Callable[[int, int, ProcessResult], None]


class AsyncSandboxes:
    """Sandbox operations of a client: ``client.sandboxes``."""

    def __init__(self, client: AsyncHopx) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<AsyncSandboxes of {self._client!r}>"

    def create(
        self,
        template: str | None = None,
        *,
        template_id: str | None = None,
        region: str | None = None,
        timeout_seconds: int | None = None,
        internet_access: bool | None = None,
        env_vars: Mapping[str, str] | None = None,
    ) -> AwaitableContext[AsyncSandbox]:
        """Create a sandbox; await it, or use ``async with`` to kill it at the end.

        >>> async with client.sandboxes.create("code-interpreter") as sandbox:  # doctest: +SKIP
        ...     await sandbox.run_code("print('hi')")
        """
        body = _create_body(
            template, template_id, region, timeout_seconds, internet_access, env_vars
        )
        return AwaitableContext(lambda: self._create(body))

    async def _create(self, body: dict[str, Any]) -> AsyncSandbox:
        resp = await self._client._control("POST", "/v1/sandboxes", json=body, safe=False)
        return self._client._sandbox_from(resp.data)

    async def connect(self, sandbox_id: str) -> AsyncSandbox:
        """Attach to an existing sandbox.

        >>> sandbox = await client.sandboxes.connect("sbx_123")  # doctest: +SKIP
        """
        validate.non_empty_str("sandbox_id", sandbox_id)
        resp = await self._client._control(
            "GET", f"/v1/sandboxes/{quote(sandbox_id)}", resource="sandbox"
        )
        return self._client._sandbox_from(resp.data)

    async def get(self, sandbox_id: str) -> SandboxInfo:
        """The record of one sandbox.

        >>> (await client.sandboxes.get("sbx_123")).status  # doctest: +SKIP
        'running'
        """
        validate.non_empty_str("sandbox_id", sandbox_id)
        resp = await self._client._control(
            "GET", f"/v1/sandboxes/{quote(sandbox_id)}", resource="sandbox"
        )
        return SandboxInfo.from_wire(resp.mapping)

    async def list(
        self,
        *,
        status: str | None = None,
        region: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SandboxInfo]:
        """Iterate over the organisation's sandboxes, following pagination cursors.

        >>> async for info in client.sandboxes.list(status="running"):  # doctest: +SKIP
        ...     print(info.id)
        """
        validate.positive_int("page_size", page_size, maximum=1000)
        if limit is not None:
            validate.positive_int("limit", limit)
        validate.optional_str("status", status)
        validate.optional_str("region", region)
        params: dict[str, str] = {"limit": str(page_size)}
        if status:
            params["status"] = status
        if region:
            params["region"] = region
        count = 0
        while True:
            resp = await self._client._control("GET", "/v1/sandboxes", params=params)
            data = resp.mapping
            items = data.get("data", data.get("sandboxes", []))
            for item in items if isinstance(items, list) else []:
                if isinstance(item, Mapping):
                    yield SandboxInfo.from_wire(item)
                    count += 1
                    if limit is not None and count >= limit:
                        return
            cursor = data.get("next_cursor")
            if not data.get("has_more") or not cursor:
                return
            params["cursor"] = str(cursor)

    async def list_templates(self) -> builtins.list[Template]:
        """The templates sandboxes can be created from."""
        resp = await self._client._control("GET", "/v1/templates")
        data = resp.data
        items = data.get("data", data.get("templates", [])) if isinstance(data, Mapping) else data
        return [Template.from_wire(i) for i in items or [] if isinstance(i, Mapping)]


class AsyncHopx:
    """The HopX client: one connection pool for all of its sandboxes.

    ``api_key`` defaults to ``HOPX_API_KEY``; ``base_url`` to ``HOPX_BASE_URL``, else the
    HopX service. Use it with ``async with`` or call :meth:`aclose`.

    >>> async with AsyncHopx() as client:  # doctest: +SKIP
    ...     async with client.sandboxes.create("code-interpreter") as sandbox:
    ...         procs = [await sandbox.run_code_background(f"print({i})") for i in range(10)]
    ...         results = await client.wait_all(procs)
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        retries: RetryPolicy | None = None,
        polling: PollPolicy | None = None,
    ) -> None:
        self._api_key = resolve_api_key(api_key)
        self._base_url = resolve_base_url(base_url)
        self._polling = polling or PollPolicy()
        self._transport = Transport(
            timeouts=timeouts or Timeouts(),
            limits=limits or Limits(),
            retries=retries or RetryPolicy(),
        )
        self._adopted: set[AsyncSandbox] = set()
        self._sandboxes: weakref.WeakSet[AsyncSandbox] = weakref.WeakSet()
        self._is_default = False
        self._origin = _caller_location()
        self.sandboxes = AsyncSandboxes(self)

    @property
    def base_url(self) -> str:
        """The control plane's URL."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._transport.closed

    def __repr__(self) -> str:
        return f"AsyncHopx(base_url={self._base_url!r})"

    async def __aenter__(self) -> AsyncHopx:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the watchers and close the connection pool. Sandboxes keep running."""
        for sandbox in list(self._sandboxes):
            task = sandbox._watcher._task
            if task is not None and not task.done():
                task.cancel()
        await self._transport.aclose(final=True)

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None and transport.opened and not self._is_default:
            warnings.warn(
                f"unclosed AsyncHopx client created at {self._origin}; "
                "use `async with AsyncHopx()` or `await client.aclose()`",
                ResourceWarning,
                stacklevel=1,
            )

    # ------------------------------------------------------------------ internals
    async def _control(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        safe: bool | None = None,
        resource: str | None = None,
    ) -> Response:
        return await self._transport.request(
            method,
            self._base_url + path,
            headers={"Authorization": f"Bearer {self._api_key}"},
            json=json,
            params=params,
            safe=safe,
            scope="control",
            resource=resource,
        )

    def _sandbox_from(self, data: Any) -> AsyncSandbox:
        if not isinstance(data, Mapping):
            raise ValidationError("response", f"expected a sandbox object, got {str(data)[:200]}")
        info = SandboxInfo.from_wire(data)
        sandbox = AsyncSandbox(self, info)
        sandbox._take_record(data)
        self._sandboxes.add(sandbox)
        return sandbox

    def _adopt(self, sandbox: AsyncSandbox) -> None:
        self._adopted.add(sandbox)
        sandbox._standalone = True

    async def _release(self, sandbox: AsyncSandbox) -> None:
        """A sandbox was killed; the default client closes its pool when none remain."""
        task = sandbox._watcher._task
        if task is not None and not task.done():
            task.cancel()
        self._adopted.discard(sandbox)
        if self._is_default and not self._adopted:
            await self._transport.aclose(final=False)

    # ------------------------------------------------------------------ fan-out
    async def wait_all(
        self,
        processes: Iterable[AsyncBackgroundProcess],
        *,
        timeout: float | None = None,
        check: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[ProcessResult]:
        """Wait for every process; return their results in the order given.

        Polls are coalesced: each sandbox costs one request per tick, whatever the number
        of processes. ``timeout`` bounds the whole wait (:class:`WaitTimeoutError`, the
        processes keep running); ``check=True`` raises :class:`ProcessFailedError` for the
        first unsuccessful one after all have ended; ``on_progress(done, total, result)``
        is called as each ends.

        >>> results = await client.wait_all(procs, timeout=600)  # doctest: +SKIP
        >>> sum(r.ok for r in results)  # doctest: +SKIP
        100
        """
        procs = _handles(processes)
        deadline = validate.optional_timeout("timeout", timeout)
        total = len(procs)
        done = 0

        async def one(proc: AsyncBackgroundProcess) -> ProcessResult:
            nonlocal done
            result = await proc.wait()
            done += 1
            if on_progress is not None:
                on_progress(done, total, result)
            return result

        gathered = asyncio.gather(*(one(p) for p in procs))
        # a cancelled wait_for() leaves the gather's CancelledError unread: mark it read
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            results = await asyncio.wait_for(gathered, deadline)
        except asyncio.TimeoutError:
            assert deadline is not None
            raise WaitTimeoutError(
                f"{total - done} of {total} processes still running after {deadline:g}s "
                "(they keep running)"
            ) from None
        if check:
            for result in results:
                if result.status in ProcessStatus.UNSUCCESSFUL:
                    raise ProcessFailedError(result)
        return list(results)

    async def as_completed(
        self, processes: Iterable[AsyncBackgroundProcess], *, timeout: float | None = None
    ) -> AsyncIterator[ProcessResult]:
        """Yield each process's result as soon as it ends.

        >>> async for result in client.as_completed(procs):  # doctest: +SKIP
        ...     print(result.process_id, result.status)
        """
        procs = _handles(processes)
        deadline = validate.optional_timeout("timeout", timeout)
        tasks = [asyncio.ensure_future(p.wait()) for p in procs]
        remaining = len(tasks)
        try:
            for fut in asyncio.as_completed(tasks, timeout=deadline):
                try:
                    result = await fut
                except asyncio.TimeoutError:
                    assert deadline is not None
                    raise WaitTimeoutError(
                        f"{remaining} of {len(tasks)} processes still running after "
                        f"{deadline:g}s (they keep running)"
                    ) from None
                remaining -= 1
                yield result
        finally:
            for task in tasks:
                task.cancel()


_PACKAGE_DIRS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hopx_sync"),
)


def _caller_location() -> str:
    """``file:line`` of the first frame outside this SDK (for the unclosed-client warning)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIRS):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


def _handles(processes: Iterable[AsyncBackgroundProcess]) -> list[AsyncBackgroundProcess]:
    procs = list(processes)
    for item in procs:
        if not isinstance(item, AsyncBackgroundProcess):
            raise ValidationError(
                "processes",
                f"expected handles returned by run_code_background(), got {type(item).__name__}",
            )
    return procs


_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncHopx] = (
    weakref.WeakKeyDictionary()
)


def _default_client() -> AsyncHopx:
    """The running loop's default client (configured from the environment)."""
    loop = asyncio.get_running_loop()
    client = _defaults.get(loop)
    if client is None or client.closed:
        client = AsyncHopx()
        client._is_default = True
        _defaults[loop] = client
    return client


async def aclose_default_client() -> None:
    """Close the running loop's default client, if one was made."""
    client = _defaults.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
