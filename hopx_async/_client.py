"""AsyncHopx: the client. It owns the connection pool shared by all of its sandboxes."""

from __future__ import annotations

import builtins
import contextlib
import inspect
import os
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import ClassVar

import anyio

from . import _batch, _fanout
from . import _validation as validate
from ._config import Limits, PollPolicy, RetryPolicy, Timeouts, resolve_api_key, resolve_base_url
from ._control import ControlPlane
from ._errors import ClientClosedError, HopxError
from ._fanout import ProgressCallback, Task
from ._models import ProcessResult, SandboxInfo, Template
from ._process import AsyncBackgroundProcess
from ._sandbox import AsyncSandbox, sandbox_from
from ._task import BatchStats
from ._transport import BOUND_ELSEWHERE, Transport
from ._utils import AwaitableContext
from ._wire import create_body

__all__ = ["AsyncHopx", "AsyncSandboxes"]

#: the largest ``limit`` of one sandbox-list request the OpenAPI documents
MAX_PAGE_SIZE = 100


async def apply_env(sandbox: AsyncSandbox, env_vars: Mapping[str, str]) -> None:
    """Set the create's ``env_vars`` in the sandbox: the service stores them without applying
    them. If that fails, the new sandbox is killed (no one holds it) and the error raised."""
    try:
        await sandbox.env.update(env_vars)
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await sandbox.kill()
        raise


class AsyncSandboxes:
    """Sandbox operations of a client: ``client.sandboxes``."""

    def __init__(self, client: AsyncHopx, control: ControlPlane) -> None:
        self._client = client
        self._control = control

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

        Without ``template`` or ``template_id`` the template is ``code-interpreter``.

        >>> async with client.sandboxes.create("code-interpreter") as sandbox:  # doctest: +SKIP
        ...     await sandbox.run_code("print('hi')")
        """
        body = create_body(
            template, template_id, region, timeout_seconds, internet_access, env_vars
        )

        async def make() -> AsyncSandbox:
            sandbox = sandbox_from(
                self._client, self._control, await self._control.create_sandbox(body)
            )
            if "env_vars" in body:
                await apply_env(sandbox, body["env_vars"])
            return sandbox

        return AwaitableContext(make)

    async def connect(self, sandbox_id: str) -> AsyncSandbox:
        """Attach to an existing sandbox.

        >>> sandbox = await client.sandboxes.connect("sbx_123")  # doctest: +SKIP
        """
        validate.non_empty_str("sandbox_id", sandbox_id)
        data = await self._control.get_sandbox(sandbox_id)
        return sandbox_from(self._client, self._control, data)

    async def get(self, sandbox_id: str) -> SandboxInfo:
        """The record of one sandbox.

        >>> (await client.sandboxes.get("sbx_123")).status  # doctest: +SKIP
        'running'
        """
        validate.non_empty_str("sandbox_id", sandbox_id)
        data = await self._control.get_sandbox(sandbox_id)
        return SandboxInfo.from_wire(data if isinstance(data, Mapping) else {})

    async def list(
        self,
        *,
        status: str | None = None,
        region: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SandboxInfo]:
        """Iterate over the organisation's sandboxes, following pagination cursors.

        ``page_size`` is the ``limit`` of each request, at most the documented 100 (a larger
        one is refused before any request); ``limit`` ends the iteration after that many
        sandboxes (a smaller first page is asked for then). A page that says ``has_more``
        without a ``next_cursor`` (the OpenAPI's list has none) raises :class:`HopxError`
        after its sandboxes, instead of ending as if complete.

        >>> async for info in client.sandboxes.list(status="running"):  # doctest: +SKIP
        ...     print(info.id)
        """
        validate.positive_int("page_size", page_size, maximum=MAX_PAGE_SIZE)
        if limit is not None:
            validate.positive_int("limit", limit)
        validate.optional_str("status", status)
        validate.optional_str("region", region)
        size = page_size if limit is None else min(page_size, limit)
        params: dict[str, str] = {"limit": str(size)}
        if status:
            params["status"] = status
        if region:
            params["region"] = region
        count = 0
        while True:
            data = await self._control.list_sandboxes(params)
            items = data.get("data", data.get("sandboxes", []))
            for item in items if isinstance(items, list) else []:
                if isinstance(item, Mapping):
                    yield SandboxInfo.from_wire(item)
                    count += 1
                    if limit is not None and count >= limit:
                        return
            cursor = data.get("next_cursor")
            if not data.get("has_more"):
                return
            if not cursor:
                raise HopxError(
                    f"the sandbox list has more than the {count} sandboxes listed, but the "
                    "server gave no next_cursor to reach them; narrow it with status= or region="
                )
            params["cursor"] = str(cursor)

    async def list_templates(self) -> builtins.list[Template]:
        """The templates sandboxes can be created from."""
        data = await self._control.list_templates()
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

    #: whether the client holds the sandboxes made through it and closes its pool when the
    #: last is killed (a loop's default client, see ``_defaults``); not set by callers
    _shares_pool: ClassVar[bool] = False

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        retries: RetryPolicy | None = None,
        polling: PollPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        key = resolve_api_key(api_key)
        self._base_url = resolve_base_url(base_url)
        now = clock if clock is not None else time.time
        self._transport = Transport(
            timeouts=timeouts or Timeouts(),
            limits=limits or Limits(),
            retries=retries or RetryPolicy(),
            clock=now,
        )
        self._control = ControlPlane(
            self._transport,
            self._base_url,
            key,
            polling=polling or PollPolicy(),
            clock=now,
            shared=self._shares_pool,
        )
        self._origin = _caller_location()
        self.sandboxes = AsyncSandboxes(self, self._control)

    @property
    def base_url(self) -> str:
        """The control plane's URL."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._transport.closed

    @property
    def origin(self) -> str:
        """``file:line`` where this client was created (errors and warnings name it).

        >>> AsyncHopx(api_key="k").origin  # doctest: +SKIP
        '/home/me/app.py:12'
        """
        return self._origin

    @property
    def timeouts(self) -> Timeouts:
        """The deadlines of one request (``Timeouts``)."""
        return self._transport.timeouts

    @property
    def throttled(self) -> dict[str, int]:
        """How many 429 and 503 answers the client absorbed (waited out and retried) so far,
        by scope: ``"control"`` for the control plane, else the sandbox id. A fan-out reads
        it to slow down; so can a caller.

        >>> client.throttled  # doctest: +SKIP
        {'control': 0, 'sbx_123': 2}
        """
        return dict(self._transport.throttled)

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
        """Close the connection pool; pending waits end with :class:`ClientClosedError`.

        Sandboxes and their processes keep running on the server.
        """
        self._control.close_all(ClientClosedError("the HopX client was closed"))
        await self._transport.aclose(final=True)

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        control = getattr(self, "_control", None)
        shared = control is not None and control.shared
        if transport is not None and transport.opened and not shared:
            warnings.warn(
                f"unclosed AsyncHopx client created at {self._origin}; "
                "use `async with AsyncHopx()` or `await client.aclose()`",
                ResourceWarning,
                stacklevel=1,
            )

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
        processes keep running); ``check=True`` raises :class:`ProcessFailedError` as soon
        as one process ends unsuccessfully; ``on_progress(done, total, result)`` is called
        as each ends. When anything fails, the other waits are cancelled at once (the
        processes keep running).

        >>> results = await client.wait_all(procs, timeout=600)  # doctest: +SKIP
        >>> sum(r.ok for r in results)  # doctest: +SKIP
        100
        """
        procs = list(processes)
        with self._explained_loop_errors([p.sandbox for p in procs], procs):
            return await _fanout.wait_all(
                procs, timeout=timeout, check=check, on_progress=on_progress
            )

    async def as_completed(
        self, processes: Iterable[AsyncBackgroundProcess], *, timeout: float | None = None
    ) -> AsyncIterator[ProcessResult]:
        """Yield each process's result as soon as it ends.

        >>> async for result in client.as_completed(procs):  # doctest: +SKIP
        ...     print(result.process_id, result.status)
        """
        procs = list(processes)
        with self._explained_loop_errors([p.sandbox for p in procs], procs):
            async with contextlib.aclosing(_fanout.as_completed(procs, timeout=timeout)) as results:
                async for result in results:
                    yield result

    async def run_many(
        self,
        tasks: Iterable[Task],
        *,
        sandboxes: Sequence[AsyncSandbox],
        max_concurrency: int = 8,
        timeout: float | None = None,
        check: bool = False,
        on_progress: ProgressCallback | None = None,
        manifest: str | os.PathLike[str] | None = None,
        retries: int = 0,
        keep_alive: bool = True,
        stats: BatchStats | None = None,
    ) -> list[ProcessResult]:
        """Run many tasks over ``sandboxes``, at most ``max_concurrency`` at once.

        Tasks go round-robin to the sandboxes; the next starts as soon as one ends.
        Results come in task order. ``timeout`` bounds the whole run; ``check=True`` raises
        :class:`ProcessFailedError` at the first task that failed for good. On any failure
        (also a raising ``on_progress(done, total, result)``) the rest is cancelled and the
        processes already started are killed. Arguments are checked before any I/O.

        ``manifest=PATH`` makes the run resumable: every start, process and result is
        appended to that file (JSON lines, fsync'd), and a run with the same tasks and the
        same file after the first one died takes the finished tasks from it, waits again on
        the running ones and starts only the others: no task starts twice. A manifest of
        other tasks raises :class:`ValidationError`. Interrupted (cancelled), a run with a
        manifest leaves its processes running for the next run.

        ``retries=N`` runs a task that failed (or whose sandbox was lost, status ``lost``)
        again, after a short backoff, up to N more times. ``max_concurrency`` is an upper
        bound: 429 and 503 answers halve the tasks in flight, successful starts raise it
        again, and a rate limit never fails the run. While a task runs in a sandbox that has
        a timeout, the sandbox's timeout is extended (``keep_alive``), never past the run's
        own ``timeout``. Pass a :class:`BatchStats` as ``stats`` to read what the run did.

        >>> tasks = [Task(code=f"print({i})") for i in range(100)]  # doctest: +SKIP
        >>> results = await client.run_many(tasks, sandboxes=[sbx1, sbx2],
        ...                                 max_concurrency=16,
        ...                                 manifest="batch.jsonl")  # doctest: +SKIP
        """
        with self._explained_loop_errors(list(sandboxes), []):
            return await _batch.run_many(
                tasks,
                sandboxes=sandboxes,
                max_concurrency=max_concurrency,
                timeout=timeout,
                check=check,
                on_progress=on_progress,
                manifest=manifest,
                retries=retries,
                keep_alive=keep_alive,
                stats=stats,
            )

    @contextlib.contextmanager
    def _explained_loop_errors(
        self, sandboxes: Sequence[object], processes: Sequence[object]
    ) -> Iterator[None]:
        """Turn "bound to another event loop" into which objects belong to which client."""
        try:
            yield
        except RuntimeError as exc:
            if BOUND_ELSEWHERE not in str(exc):
                raise
            named = _foreign(self, sandboxes, processes)
            if not named:
                raise
            raise RuntimeError(
                "these handles belong to another client than the one called (created at "
                f"{self.origin}), and each client runs on its own event loop: "
                f"{'; '.join(named)}. Use each handle with the client that made it, or get "
                "this client's own: client.sandboxes.connect(SANDBOX_ID), then "
                "sandbox.process(PROCESS_ID)"
            ) from exc


def _foreign(
    client: AsyncHopx, sandboxes: Sequence[object], processes: Sequence[object]
) -> list[str]:
    """Each client other than ``client`` with the handles of it that were given."""
    owned: dict[int, tuple[AsyncHopx, list[str]]] = {}
    for sandbox in sandboxes:
        if isinstance(sandbox, AsyncSandbox) and sandbox.client is not client:
            entry = owned.setdefault(id(sandbox.client), (sandbox.client, []))
            if f"sandbox {sandbox.id}" not in entry[1]:
                entry[1].append(f"sandbox {sandbox.id}")
    for proc in processes:
        if isinstance(proc, AsyncBackgroundProcess) and proc.sandbox.client is not client:
            owned.setdefault(id(proc.sandbox.client), (proc.sandbox.client, []))[1].append(
                f"process {proc.id}"
            )
    return [
        f"{', '.join(names)} belong to the client created at {other.origin}"
        for other, names in owned.values()
    ]


_PACKAGE_DIRS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hopx_sync"),
)


def _caller_location() -> str:
    """``file:line`` of the first frame outside this SDK (for the unclosed-client warning)."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIRS):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"
